"""Rule bodies that cost the server far more than their size: YAML alias bombs, condition-count bombs,
deep nesting and oversize bodies each get a 4xx naming the reason, quickly, instead of a stuck thread
or a 500. Ordinary rules still go through."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.schemas import check_storable
from worker.rules import RuleError, parse_definition, parse_text
from worker.rules.language import ALIASES_REFUSED, MAX_CONDITIONS

YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def client() -> Iterator[TestClient]:
    from api.main import create_app

    with TestClient(create_app()) as c:
        yield c


def _post(client: TestClient, key: str, headers: dict[str, str] | None = None, **kwargs):
    return client.post("/v1/rules", headers={"X-API-Key": key, **(headers or {})}, **kwargs)


def _messages(resp) -> str:
    assert resp.status_code == 422, resp.text
    return " | ".join(err["msg"] for err in resp.json()["detail"])


def _alias_bomb(levels: int = 6) -> str:
    """Billion laughs: each level lists the previous one 9 times (9 ** levels leaves when expanded).
    Kept small enough that the unfixed server answers (slowly) instead of hanging the test run."""
    lines = ['  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "when: {label: angry}\nlols:\n" + "\n".join(lines) + "\n"


def _indent(text: str) -> str:
    return "".join(f"  {line}\n" for line in text.splitlines())


def _fan_out(width: int, depth: int) -> dict:
    """`any` nested `depth` levels, `width` children each: width ** depth leaf conditions."""
    node: dict = {"label": "angry"}
    for _ in range(depth):
        node = {"any": [node] * width}
    return node


def test_yaml_alias_bomb_is_refused(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    body = "name: bomb\ndefinition:\n" + _indent(_alias_bomb())
    assert ALIASES_REFUSED in _messages(_post(client, key, YAML, content=body))


def test_yaml_alias_bomb_in_a_json_definition_string_is_refused(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    resp = _post(client, key, json={"name": "bomb", "definition": _alias_bomb()})
    assert ALIASES_REFUSED in _messages(resp)


def test_an_alias_inside_a_valid_rule_is_refused(client: TestClient, make_tenant) -> None:
    # ~650 bytes like this once parsed to 125k conditions: aliases are refused even when "valid".
    _, key = make_tenant()
    body = ("name: fan\ndefinition:\n  when:\n    any: &a [{label: angry}, {label: sad}]\n"
            "  severity: high\n")
    assert ALIASES_REFUSED in _messages(_post(client, key, YAML, content=body))
    body = "name: fan\ndefinition:\n  when: {any: [*a]}\n"  # an alias to nothing: still refused, clearly
    assert ALIASES_REFUSED in _messages(_post(client, key, YAML, content=body))


def test_condition_count_bomb_is_refused(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    when = _fan_out(width=6, depth=4)  # 1296 leaves, ~25 KB of JSON: under the body cap
    resp = _post(client, key, json={"name": "fan", "definition": {"when": when}})
    assert f"more than {MAX_CONDITIONS} conditions" in _messages(resp)


def test_condition_limit_in_the_language() -> None:
    # 1 + 4 * (1 + 45) = 185 conditions: allowed; one more level of fan-out is not.
    ok = {"any": [{"all": [{"label": "angry"}] * 45}] * 4}
    assert parse_definition({"when": ok}).when is not None
    with pytest.raises(RuleError, match=f"more than {MAX_CONDITIONS} conditions"):
        parse_definition({"when": {"any": [ok, ok]}})


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_json_is_a_422(client: TestClient, make_tenant, depth: int) -> None:
    _, key = make_tenant()
    nested = '{"a": ' * depth + "1" + "}" * depth
    body = '{"name": "deep", "definition": {"when": {"label": "angry"}, "x": ' + nested + "}}"
    resp = _post(client, key, {"Content-Type": "application/json"}, content=body)
    assert _messages(resp)  # 422 with a reason (too deep to parse, or an unknown key)


@pytest.mark.parametrize("depth", [900, 5000])
def test_deeply_nested_yaml_is_a_422(client: TestClient, make_tenant, depth: int) -> None:
    _, key = make_tenant()
    nested = "[" * depth + "]" * depth
    body = "name: deep\ndefinition: {when: {label: angry}, x: " + nested + "}\n"
    assert _messages(_post(client, key, YAML, content=body))
    # The same through a JSON body carrying the definition as a YAML string.
    resp = _post(client, key, json={"name": "deep", "definition": "x: " + nested})
    assert _messages(resp)


def test_parse_text_answers_deep_nesting_with_a_rule_error() -> None:
    for text, kind in (("[" * 5000 + "]" * 5000, "application/json"),
                       ("[" * 5000 + "]" * 5000, "application/yaml")):
        with pytest.raises(RuleError, match="nested too deeply"):
            parse_text(text, kind)


def test_check_storable_walks_deep_values_without_recursing() -> None:
    value: object = math.nan
    for _ in range(5000):
        value = [value]
    with pytest.raises(ValueError, match="non-finite"):
        check_storable(value, "metadata")
    value = "ok"
    for _ in range(5000):
        value = {"k": value}
    check_storable(value, "metadata")
    # The first problem in document order is still the one reported.
    with pytest.raises(ValueError, match=r"^metadata\.a contains a NUL"):
        check_storable({"a": "\x00", "b": [math.inf]}, "metadata")


def test_oversize_body_is_refused(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    # Valid JSON (trailing whitespace) that would otherwise create a rule.
    body = json.dumps({"name": "big", "definition": {"when": {"label": "angry"}}}) + " " * (70 * 1024)
    resp = _post(client, key, {"Content-Type": "application/json"}, content=body)
    assert resp.status_code == 413 and "64 KiB" in resp.json()["detail"], resp.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield body.encode()[: 40 * 1024]
        yield body.encode()[40 * 1024:]

    resp = _post(client, key, {"Content-Type": "application/json"}, content=chunks())
    assert resp.status_code == 413, resp.text


def test_ordinary_yaml_rules_still_work(client: TestClient, make_tenant) -> None:
    _, key = make_tenant()
    yaml_rule = ("name: angry customer\ndefinition:\n  severity: high\n  roles: [customer]\n"
                 "  when:\n    sustained:\n      segments: 2\n      condition: {label: angry}\n")
    resp = _post(client, key, YAML, content=yaml_rule)
    assert resp.status_code == 201, resp.text
    assert resp.json()["definition"]["when"]["sustained"]["condition"] == {"label": "angry"}
    resp = _post(client, key, json={"name": "as text", "definition": "when: {label: [angry, sad]}"})
    assert resp.status_code == 201, resp.text
    # A wide rule (111 conditions) within the limit is accepted too.
    resp = _post(client, key, json={"name": "wide", "definition": {"when": _fan_out(width=10, depth=2)}})
    assert resp.status_code == 201, resp.text
