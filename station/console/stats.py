"""A centre's inter-rater agreement across candidates, from a console store (``station console stats``).

Every (station, session) in the store is one exam: its two assessors (the two with the most
verdicts) and their latest observed / not_observed verdict per competence, as on the board
(``state.competence_rows``). ``centre_agreement`` gives each exam's Cohen's kappa and the centre's:
the kappa of all exams' verdict pairs pooled, overall and per pair of assessors.
"""

from __future__ import annotations

from station.competences import cohen_kappa, exam_agreement
from station.console.web.state import StationModel, competence_rows

BIG = {"lane": 1, "focus": 1, "dead": 1, "contacts": 1, "marks": 1_000_000, "alerts": 1}


def centre_agreement(reader) -> dict:
    """{"exams": [{station, session, candidate, raters, n, agree, kappa, disagreements}],
    "centre": cohen_kappa of the pooled pairs, "pairs": {"a / b": cohen_kappa}}."""
    exams, pooled, by_pair = [], [], {}
    for s in reader.sessions():
        st = StationModel(s["station"], BIG)
        for m in reader.messages(s["station"], s["session"], kinds=("mark", "exam")):
            st.apply(m)
        rows = competence_rows(st)
        ag = exam_agreement({r["id"]: r["verdicts"] for r in rows})
        if len(ag["raters"]) < 2:
            continue
        r1, r2 = ag["raters"]
        pairs = [(r["verdicts"][r1]["verdict"], r["verdicts"][r2]["verdict"]) for r in rows
                 if r1 in r["verdicts"] and r2 in r["verdicts"]]
        pooled += pairs
        by_pair.setdefault(" / ".join(sorted((r1, r2))), []).extend(pairs)
        exams.append({"station": s["station"], "session": s["session"],
                      "candidate": st.exam.get("candidate_id", ""), **ag})
    return {"exams": exams, "centre": cohen_kappa(pooled),
            "pairs": {k: cohen_kappa(v) for k, v in sorted(by_pair.items())}}


def format_table(res: dict) -> str:
    def k(v):
        return "–" if v is None else f"{v:.2f}"
    lines = [f"{'STATION':<14} {'SESSION':<36} {'CANDIDATE':<12} {'ASSESSORS':<20} {'RATED':>5} {'ALIKE':>5} KAPPA"]
    for e in res["exams"]:
        lines.append(f"{e['station']:<14} {e['session']:<36} {e['candidate'] or '–':<12} {' / '.join(e['raters']):<20} "
                     f"{e['n']:>5} {e['agree']:>5} {k(e['kappa'])}")
    c = res["centre"]
    lines.append(f"centre: {len(res['exams'])} exams, {c['n']} verdict pairs, {c['agree']} alike, "
                 f"Cohen's kappa {k(c['kappa'])}")
    for pair, v in res["pairs"].items():
        lines.append(f"  {pair}: {v['n']} pairs, kappa {k(v['kappa'])}")
    return "\n".join(lines)
