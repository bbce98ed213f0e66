"""Playbook loading: the shipped library loads, and every refusal points at file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlwarden.playbooks.loader import load_playbook, load_playbooks, parse_playbook
from mlwarden.playbooks.model import Playbook
from mlwarden.playbooks.shipped import library_dir
from mlwarden.playbooks.yaml_source import MAX_BYTES
from mlwarden.responders.params import PageParams
from mlwarden.schemas.alert import AlertKind
from mlwarden.schemas.errors import PlaybookError, SourceLocation

DATA = Path(__file__).parent.parent / "data" / "playbooks"
INVALID = DATA / "invalid"


def refusal(path: Path) -> PlaybookError:
    with pytest.raises(PlaybookError) as caught:
        load_playbook(path)
    return caught.value


def lines(error: PlaybookError) -> list[str]:
    return str(error).splitlines()


def test_shipped_library_loads_with_the_abuse_playbook() -> None:
    playbooks = load_playbooks(library_dir())
    by_name = {p.name: p for p in playbooks}
    abuse = by_name["abuse-query-budget"]
    assert abuse.match.kinds == [AlertKind.ABUSE]
    assert abuse.match.detectors == ["query_budget"]
    assert [step.step_type for step in abuse.steps] == ["page"]
    assert isinstance(abuse.steps[0].params, PageParams)
    assert [p.name for p in playbooks] == sorted(by_name)


def test_directory_load_takes_yaml_and_yml_sorted_by_name() -> None:
    playbooks = load_playbooks(DATA / "valid")
    assert [p.name for p in playbooks] == ["drift-critical", "extraction-page"]
    assert all(isinstance(p, Playbook) for p in playbooks)


def test_single_file_load_through_load_playbooks() -> None:
    [playbook] = load_playbooks(DATA / "valid" / "drift.yml")
    assert playbook.name == "drift-critical"


def test_misspelled_field_names_the_key_and_suggests_the_right_one() -> None:
    path = INVALID / "misspelled_field.yaml"
    error = refusal(path)
    assert lines(error) == [
        f"{path}:5:5: steps[0].page.message: missing required field 'message'",
        f"{path}:7:7: steps[0].page.mesage: unknown field 'mesage' (did you mean 'message'?); "
        "allowed here: message, severity, service",
    ]
    assert error.location == SourceLocation(str(path), 5, 5)
    assert error.field_path == "steps[0].page.message"


def test_unknown_step_type_lists_the_known_types() -> None:
    path = INVALID / "unknown_step_type.yaml"
    error = refusal(path)
    assert str(error) == (
        f"{path}:7:5: steps[1]: unknown step type 'rate_limt' (did you mean 'rate_limit'?); "
        "known step types: rate_limit, snapshot_evidence, rollback_model, page, notify, wait, "
        "require_approval"
    )


def test_bad_templates_fail_at_load_with_their_positions() -> None:
    path = INVALID / "bad_template.yaml"
    first, second = lines(refusal(path))
    assert first.startswith(f"{path}:6:16: steps[0].page.message: template syntax error")
    assert second.startswith(f"{path}:8:16: steps[1].page.message: template uses something")
    assert "clientid" in second


def test_wrong_types_are_all_reported_in_file_order() -> None:
    path = INVALID / "wrong_type.yaml"
    assert lines(refusal(path)) == [
        f"{path}:3:10: match.kinds: Input should be a valid list (got 'abuse')",
        f"{path}:4:17: match.min_severity: Input should be 'info', 'warning' or 'critical' "
        "(got 'urgent')",
        f"{path}:7:16: steps[0].page.message: Input should be a valid string (got 42)",
    ]


def test_anchors_and_aliases_are_refused() -> None:
    path = INVALID / "alias.yaml"
    assert str(refusal(path)) == (
        f"{path}:5:11: YAML anchors (&name) are not allowed in playbooks; "
        "write the value out in full"
    )
    with pytest.raises(PlaybookError, match=r"^x:2:4: YAML aliases"):
        parse_playbook("name: a\nb: *undefined\n", source="x")


def test_billion_laughs_is_refused_before_expansion() -> None:
    laughs = 'a: &a ["lol","lol"]\n' + "".join(
        f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(PlaybookError, match="anchors"):
        parse_playbook(laughs)


def test_oversized_documents_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: big\ndescription: " + "x" * MAX_BYTES + "\n")
    assert str(refusal(big)) == f"{big}:1:1: file is over the {MAX_BYTES}-byte limit"
    with pytest.raises(PlaybookError, match="limit"):
        parse_playbook("#" * (MAX_BYTES + 1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: !!python/object:os.system x\n", "<string>:1:7: tag 'tag:yaml.org,2002:python"),
        ("name: !custom x\n", "<string>:1:7: tag '!custom' is not allowed"),
        ("name: !!binary aGk=\n", "<string>:1:7: tag 'tag:yaml.org,2002:binary'"),
        ("name: a\nname: b\n", "<string>:2:1: duplicate key 'name'"),
        ("? [a]\n: b\n", "<string>:1:3: mapping key 'SequenceNode' is not a string"),
        ("- a\n", "<string>:1:1: a playbook is a mapping"),
        ("", "<string>:1:1: the document is empty"),
        ("a: 1\n---\nb: 2\n", "<string>:2:1: invalid YAML: expected a single document"),
        ("name: [\n", "<string>:2:1: invalid YAML"),
        ("name: \x07\n", "<string>:1:7: invalid YAML: special characters are not allowed"),
        ("x: " + "[" * 100, "<string>:1:67: nested deeper than 64"),
    ],
)
def test_unsafe_or_malformed_yaml_is_refused_with_a_position(text: str, expected: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(text)
    assert str(caught.value).startswith(expected)


def test_implicit_timestamps_and_merge_keys_stay_plain_strings() -> None:
    playbook = parse_playbook(
        "name: p\ndescription: 2024-01-01\nmatch: {kinds: [drift]}\n"
        "steps: [{page: {message: hi}}]\n"
    )
    assert playbook.description == "2024-01-01"
    with pytest.raises(PlaybookError, match="unknown field '<<'"):
        parse_playbook("name: p\n<<: {description: x}\nmatch: {kinds: [drift]}\n")


def test_duplicate_playbook_names_are_refused() -> None:
    folder = DATA / "duplicate_names"
    with pytest.raises(PlaybookError) as caught:
        load_playbooks(folder)
    assert str(caught.value) == (
        f"{folder / 'b.yaml'}:1:7: name: playbook 'same-name' is already defined at "
        f"{folder / 'a.yaml'}:1:7; names must be unique"
    )


def test_unreadable_and_non_utf8_files_are_playbook_errors(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError, match="cannot read playbook"):
        load_playbook(tmp_path / "missing.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    assert str(refusal(latin)) == f"{latin}:2:17: file is not UTF-8 text"


def test_an_invalid_file_stops_the_directory_load(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text((DATA / "valid" / "drift.yml").read_text())
    (tmp_path / "b.yaml").write_text("name: broken\n")
    with pytest.raises(PlaybookError, match=r"b\.yaml:1:1: match: missing required field"):
        load_playbooks(tmp_path)


SHIPPED_TEXTS = [path.read_text() for path in sorted(library_dir().glob("*.yaml"))]
_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def _spliced(draw: st.DrawFn) -> str:
    """A shipped playbook with a slice replaced: mostly-valid YAML that reaches validation
    (conditions, durations, templates, escalations, detector names)."""
    text = draw(st.sampled_from(SHIPPED_TEXTS))
    start = draw(st.integers(0, len(text)))
    end = draw(st.integers(start, min(len(text), start + 40)))
    filler = st.text(max_size=20) | st.sampled_from(
        ["99999999999999d", "`", "{{", "}}", "'", "*", "&a", "escalate", "[", "-1", "0x"]
    )
    return text[:start] + draw(filler) + text[end:]


@settings(deadline=None, max_examples=600)
@given(
    st.one_of(
        st.text(),
        _spliced(),
        _yaml_values.map(lambda value: yaml.safe_dump(value, allow_unicode=True)),
    )
)
def test_any_text_loads_or_raises_playbook_error(text: str) -> None:
    outcome: Playbook | PlaybookError
    try:
        outcome = parse_playbook(text)
    except PlaybookError as error:
        outcome = error
    assert isinstance(outcome, Playbook) or str(outcome).startswith("<string>:")
