"""Operations helpers: install, doctor, systemd notify, signals, malloc tuning."""
