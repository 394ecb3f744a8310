"""Calibration certificate: pass/fail of each measurement against the configured limits.

``Certificate`` holds the identification (headset, station, technician, UTC time, rig), every
measured figure and one ``Check`` per limit. It is written as JSON (machine-readable), plain text
and a self-contained HTML page, side by side: ``<dir>/<headset>-<YYYYmmddTHHMMSSZ>.{json,txt,html}``.
No audio content is stored: figures only.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from station.errors import UserError


@dataclass(frozen=True)
class Check:
    """One limit. op is ">=" or "<="; passed is computed by ``Check.of``."""

    name: str
    value: float
    op: str
    limit: float
    unit: str
    passed: bool
    note: str = ""

    @classmethod
    def of(cls, name: str, value: float, op: str, limit: float, unit: str, note: str = "") -> "Check":
        if op not in (">=", "<="):
            raise ValueError(op)
        ok = value >= limit if op == ">=" else value <= limit
        return cls(name, float(value), op, float(limit), unit, bool(ok), note)


@dataclass
class Certificate:
    headset_id: str
    station_id: str
    technician: str
    created: str
    source: str                      # "rig" or "voice"
    rig_id: str = ""
    measurements: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    software: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def text(self) -> str:
        lines = [f"HEADSET CALIBRATION CERTIFICATE - {'PASS' if self.passed else 'FAIL'}",
                 f"headset {self.headset_id}   station {self.station_id}   technician {self.technician}",
                 f"date {self.created}   driven by {self.source}" + (f" ({self.rig_id})" if self.rig_id else ""),
                 "", "checks:"]
        for c in self.checks:
            lines.append(f"  [{'pass' if c.passed else 'FAIL'}] {c.name}: {c.value:.1f} {c.unit} "
                         f"(limit {c.op} {c.limit:g} {c.unit})" + (f"  {c.note}" if c.note else ""))
        lines += ["", "measurements:"]
        for k, v in self.measurements.items():
            lines.append(f"  {k} = {v:.2f}" if isinstance(v, float) else f"  {k} = {v}")
        if self.notes:
            lines += ["", "notes:"] + [f"  - {n}" for n in self.notes]
        if self.software:
            lines += ["", f"software: {self.software}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        e = html.escape
        verdict = "PASS" if self.passed else "FAIL"
        rows = "".join(
            f"<tr class={'pass' if c.passed else 'fail'}><td>{e(c.name)}</td><td>{c.value:.1f} {e(c.unit)}</td>"
            f"<td>{e(c.op)} {c.limit:g} {e(c.unit)}</td><td>{'pass' if c.passed else 'FAIL'}</td>"
            f"<td>{e(c.note)}</td></tr>" for c in self.checks)
        meas = "".join(f"<tr><td>{e(k)}</td><td>{e(f'{v:.2f}' if isinstance(v, float) else str(v))}</td></tr>"
                       for k, v in self.measurements.items())
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Headset calibration {e(self.headset_id)}: {verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:.3em .6em}} .pass td:nth-child(4){{color:#060}}
.fail td:nth-child(4){{color:#b00;font-weight:bold}} h1 span{{color:{'#060' if self.passed else '#b00'}}}</style>
</head><body>
<h1>Headset calibration certificate: <span>{verdict}</span></h1>
<p>Headset <b>{e(self.headset_id)}</b> on station <b>{e(self.station_id)}</b>, technician {e(self.technician)},
{e(self.created)}, driven by {e(self.source)}{(' (' + e(self.rig_id) + ')') if self.rig_id else ''}.</p>
<h2>Checks</h2><table><tr><th>check</th><th>value</th><th>limit</th><th>result</th><th>note</th></tr>{rows}</table>
<h2>Measurements</h2><table>{meas}</table>
{('<h2>Notes</h2><ul>' + notes + '</ul>') if notes else ''}
<p><small>{e(self.software)}</small></p>
</body></html>
"""

    def write(self, directory: Path) -> dict[str, Path]:
        """Write JSON, text and HTML; return their paths. UserError when the directory is not writable."""
        stamp = self.created.replace("-", "").replace(":", "").split(".")[0].replace("+0000", "Z")
        if not stamp.endswith("Z"):
            stamp += "Z"
        base = Path(directory) / f"{self.headset_id}-{stamp}"
        out = {"json": base.with_suffix(".json"), "text": base.with_suffix(".txt"), "html": base.with_suffix(".html")}
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            out["json"].write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
            out["text"].write_text(self.text(), encoding="utf-8")
            out["html"].write_text(self.html(), encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot write the certificate in {directory}: {err.strerror}") from None
        return out
