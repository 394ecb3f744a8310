"""Evidence per competence on hand-built sessions: D1-D5, C3, C5, C6, marks and 'proven'."""

from station.competences import COMPETENCE_IDS
from station.engine.evidence import levenshtein, session_evidence
from station.events import AssessorMark, KeyClass, KeyEvent
from tests.engine_helpers import S, focus, marker, run, speech, typing


def mark(t_s, assessor, competence, kind, text="", key=None):
    """A journaled mark; ``key``: the fingerprint of the key that sent it (default: one per assessor)."""
    return AssessorMark(int(t_s * S), assessor, assessor.upper(), competence, kind, text, f"{assessor}-{t_s}",
                        key if key is not None else f"fp-{assessor}")


def chars(t_s, text, step=0.2):
    out = []
    for i, ch in enumerate(text):
        t = int((t_s + i * step) * S)
        if ch == "\b":
            out += [KeyEvent(t, KeyClass.BACKSPACE, True), KeyEvent(t + 50_000_000, KeyClass.BACKSPACE, False)]
        else:
            out += [KeyEvent(t, KeyClass.PRINTABLE, True, char=ch), KeyEvent(t + 50_000_000, KeyClass.PRINTABLE, False)]
    return out


def test_levenshtein_by_hand():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


def test_d5_accuracy_from_typing_task_with_corrections():
    # reference 20 chars; typed "hello wprld\bo" -> backspace fixes one; final has 1 substitution
    ref = "hello world, friends"
    typed = "hello wpx\b\borld, friendz"   # two wrong, two backspaces, then 1 wrong at the end
    ev = [focus(0, "typing_task")] + chars(1, typed)
    eng, _ = run(ev, end_s=12, reference_text=ref)
    d5 = session_evidence(eng)["D5"]
    assert d5["figures"]["estimate"] is False
    assert d5["figures"]["accuracy"] == round(1 - 1 / 20, 4)   # "friendz" vs "friends"
    assert d5["auto"] is False                                 # 0.95 < 0.97


def test_backspace_outside_typing_task_does_not_edit_the_text():
    ref = "abc"
    ev = [focus(0, "typing_task")] + chars(1, "abc") + [focus(2, "crm")] + chars(3, "\b\b")
    eng, _ = run(ev, end_s=8, reference_text=ref)
    assert session_evidence(eng)["D5"]["figures"]["accuracy"] == 1.0


def test_d5_estimate_without_reference():
    ev = [focus(0, "crm")] + typing(1, 5, step_s=0.25) + typing(5, 6, step_s=0.5, key_class=KeyClass.BACKSPACE)
    eng, _ = run(ev, end_s=10)
    d5 = session_evidence(eng)["D5"]
    assert d5["figures"]["estimate"] is True
    assert d5["figures"]["accuracy"] == round(1 - 2 / 18, 4)   # 16 presses + 2 corrections


def test_d1_d2_d3_tools_knowledge_crm_and_after_contact_work():
    # call 0-20 s with focus crm 0-5, knowledge 5-8, crm 8-20; keys into crm 1-3 s (10 presses)
    # after the call: keys in crm at 25-29 s, then nothing; next contact would never come.
    ev = [marker(0, "start"), marker(20, "end"), focus(0, "crm"), focus(5, "knowledge"), focus(8, "crm")]
    ev += speech(0, [(0, 10)], 0, 200) + speech(1, [(10, 20)], 0, 200)
    ev += typing(1, 2.9, step_s=0.2) + typing(25, 28.9, step_s=0.5)
    eng, _ = run(ev, end_s=200)
    e = session_evidence(eng)
    (c,) = eng.contacts
    assert c["tool_time_ms"] == 20_000
    assert c["knowledge_entries"] == 1 and c["knowledge_time_ms"] == 3000
    assert c["crm_keys"] == 10
    assert c["crm_keys_after"] == 8
    # after-contact work: from 20 s to the start of the 120 s input pause, at the last release (28.55 s)
    assert c["after_contact_ms"] == 8550
    assert e["D1"]["auto"] is True and e["D3"]["auto"] is True
    assert e["D2"]["auto"] is None          # needs the assessor


def test_c3_counters_per_contact_and_two_assessor_agreement():
    ev = [marker(0, "start", ref="a"), marker(30, "end", ref="a")]
    ev += speech(0, [(1, 10)], 0, 40) + speech(1, [(11, 29)], 0, 40)
    ev += [mark(5 + i, "a1", "C3", "counter") for i in range(4)]            # 4 > 3
    ev += [mark(6, "a2", "C3", "counter")]
    ev += [mark(12, "a1", "C1", "observed"), mark(13, "a2", "C1", "observed")]
    ev += [mark(14, "a1", "C2", "observed"), mark(15, "a2", "C2", "not_observed")]
    ev += [mark(16, "a1", "C4", "observed")]
    eng, _ = run(ev, end_s=40)
    e = session_evidence(eng)
    assert e["C3"]["figures"]["counters"] == {"#1 phone": {"a1": 4, "a2": 1}}
    assert e["C3"]["auto"] is False
    assert e["C1"]["proven"] is True         # both observed
    assert e["C2"]["proven"] is False        # they disagree
    assert e["C4"]["proven"] is False        # only one assessor
    assert e["C2"]["disagree"] is True and e["C1"]["disagree"] is False
    assert set(e) == set(COMPETENCE_IDS)


def test_proven_needs_two_keys_and_a_disagreement_ends_only_with_both_keys():
    ev = [mark(1, "a1", "C5", "observed"), mark(2, "a2", "C5", "observed", key="fp-a1")]   # one key, two ids
    ev += [mark(3, "a1", "C6", "observed", key=""), mark(4, "a2", "C6", "observed", key="")]  # no keys (plaintext)
    ev += [mark(5, "a1", "C7", "observed"), mark(6, "a2", "C7", "not_observed")]
    ev += [mark(7, "a1", "C7", "consensus_observed")]                                # one key's consensus only
    ev += [mark(5, "a1", "C8", "observed"), mark(6, "a2", "C8", "not_observed")]
    ev += [mark(7, "a1", "C8", "consensus_observed"), mark(8, "a2", "C8", "consensus_observed")]
    ev += [mark(5, "a1", "D6", "observed"), mark(6, "a2", "D6", "not_observed")]
    ev += [mark(7, "a1", "D6", "consensus_not_observed"), mark(8, "a2", "D6", "consensus_not_observed")]
    eng, _ = run(ev, end_s=10)
    e = session_evidence(eng)
    assert e["C5"]["proven"] is False and e["C6"]["proven"] is False
    assert e["C7"]["proven"] is False and e["C7"]["disagree"] is True
    assert e["C8"]["proven"] is True
    # the original verdicts stay in the record beside the consensus
    assert e["C8"]["assessors"]["a2"]["verdict"] == "not_observed" and e["C8"]["disagree"] is True
    assert set(e["C8"]["consensus"]) == {"a1", "a2"}
    assert e["D6"]["proven"] is False
    assert e["C8"]["assessors"]["a1"]["key_fp"] == "fp-a1"


def test_c5_c6_spurts_and_dead_air_over_the_session():
    # one call: agent spurts 2 s, 6 s, 12 s; customer between; one dead air of 4 s
    ev = [marker(0, "start"), marker(60, "end")]
    ev += speech(0, [(0, 2), (10, 16), (30, 42)], 0, 62) + speech(1, [(2.5, 9.5), (16.5, 26), (42.5, 60)], 0, 62)
    eng, _ = run(ev, end_s=62)
    e = session_evidence(eng)
    assert e["C5"]["figures"]["count"] == 3
    assert e["C5"]["figures"]["median_ms"] == 6000
    assert e["C5"]["figures"]["long_share"] == round(1 / 3, 4)
    assert e["C5"]["auto"] is False          # median 6 s > 4 s
    assert e["C6"]["figures"]["dead_air_count"] == 1
    assert e["C6"]["figures"]["longest_ms"] == 4000
    assert e["C6"]["auto"] is False


def test_s2_rule_from_chat_figures():
    ev = [focus(0, "chat"), focus(10, "knowledge"), focus(20, "chat"), focus(30, "crm"), focus(40, "chat"),
          focus(50, "other")]
    eng, _ = run(ev, end_s=200)
    e = session_evidence(eng)
    assert e["S2"]["auto"] is True           # 4 switches in 50 s = 4.8/min, all chat time near info
    assert e["S1"]["auto"] is None           # no phone contact: nothing to judge


def test_live_evidence_message_after_a_contact_and_a_mark():
    ev = [marker(0, "start"), marker(10, "end")] + speech(0, [(1, 5)], 0, 12) + speech(1, [(5.5, 9)], 0, 12)
    ev += [mark(11, "a1", "C7", "observed")]
    eng, outs = run(ev, end_s=12)
    evid = [b for k, _, b in outs if k == "evidence"]
    assert len(evid) >= 2
    assert evid[-1]["competences"]["C7"]["assessors"]["a1"]["verdict"] == "observed"
    assert "S3" in evid[0]["competences"]
