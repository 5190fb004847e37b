"""`flotilla check` refuses mis-wired topologies: actor arguments are checked against the
constructors (names, types) and paths in them against the tree, each with its YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.processes import run_flotilla

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = (ROOT / "supervisor_tree.yaml").read_text(encoding="utf-8")


def check_variant(tmp_path: Path, old: str, new: str) -> tuple[str, int, list[str]]:
    """Run `flotilla check` on the default topology with `old` replaced by `new`; the file,
    the line `new` is on, and the problems reported."""
    assert DEFAULT.count(old) == 1, old
    text = DEFAULT.replace(old, new)
    path = tmp_path / "tree.yaml"
    path.write_text(text, encoding="utf-8")
    line = text[: text.index(new)].count("\n") + 1 + new[: new.rindex(new.strip())].count("\n")
    result = run_flotilla("check", str(path))
    assert result.returncode == 2, result.stdout
    return str(path), line, result.stderr.splitlines()[:-1]


def test_the_default_topology_passes_check() -> None:
    result = run_flotilla("check", "supervisor_tree.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_router_whose_fetchers_name_nothing_is_refused_with_the_line(tmp_path: Path) -> None:
    path, line, problems = check_variant(
        tmp_path, "fetchers: alpha/root/fetching/fetchers", "fetchers: alpha/root/fetchers"
    )
    assert problems == [
        (
            f"{path}:{line}: tree.children[2].args.fetchers: 'alpha/root/fetchers' names nothing in "
            "the tree: it must be a worker or a pool of 'fetcher'; did you mean "
            "'alpha/root/fetching/fetchers'?"
        )
    ]


def test_a_path_to_the_wrong_kind_of_actor_is_refused(tmp_path: Path) -> None:
    path, line, problems = check_variant(
        tmp_path, "args: {extractor: alpha/root/fetching/extractors,", "args: {extractor: alpha/root/router,"
    )
    assert problems == [
        (
            f"{path}:{line}: tree.children[3].supervisor.children[1].pool.args.extractor: "
            "'alpha/root/router' is flotilla.actors.pipeline.router:Router: it must be a worker or a pool of "
            "'extractor'; did you mean 'alpha/root/fetching/extractors'?"
        )
    ]


def test_an_alerts_argument_must_name_an_alert_sink(tmp_path: Path) -> None:
    path, line, problems = check_variant(
        tmp_path, "args: {alerts: alpha/root/alerts}\n", "args: {alerts: alpha/root/resilience/limiter}\n"
    )
    assert problems == [
        (
            f"{path}:{line}: tree.children[1].supervisor.children[2].args.alerts: "
            "'alpha/root/resilience/limiter' is flotilla.actors.resilience.limiter:RateLimiter: "
            "it must be a worker or a pool of 'alerts'; did you mean 'alpha/root/alerts'?"
        )
    ]


def test_a_misspelt_router_argument_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    path, line, problems = check_variant(tmp_path, "max_attempts: 4", "max_retries: 4")
    assert len(problems) == 1
    assert problems[0].startswith(
        f"{path}:{line}: tree.children[2].args.max_retries: unknown argument of router; "
        "did you mean 'max_attempts'? (accepted: fetchers, "
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "timeout: 5.0,",
            "timeout: fast,",
            "tree.children[3].supervisor.children[1].pool.args.timeout: 'fast' must be a number",
        ),
        (
            "max_in_flight: 128,",
            "max_in_flight: 12.5,",
            "tree.children[3].supervisor.children[1].pool.args.max_in_flight: 12.5 must be an integer",
        ),
        (
            "default_rate: 200 ",
            "default_rate: yes ",
            "tree.children[1].supervisor.children[1].args.default_rate: True must be a number",
        ),
        (
            'rates: {"127.0.0.1:8800": 5000,',
            'rates: {"127.0.0.1:8800": lots,',
            (
                "tree.children[1].supervisor.children[1].args.rates: {'127.0.0.1:8800': 'lots', '127.0.0.1:8802': 18} "
                "must be a mapping of strings to numbers or null"
            ),
        ),
        (
            "args: {alerts: alpha/root/alerts}\n",
            "args: {alerts: alpha/root/alerts, mode: pause}\n",
            "tree.children[1].supervisor.children[2].args.mode: 'pause' must be one of 'auto', 'on', 'off'",
        ),
    ],
)
def test_an_argument_of_the_wrong_type_is_refused(tmp_path: Path, old: str, new: str, expected: str) -> None:
    path, line, problems = check_variant(tmp_path, old, new)
    assert problems == [f"{path}:{line}: {expected}"]


def test_an_int_is_accepted_for_a_float(tmp_path: Path) -> None:
    path = tmp_path / "tree.yaml"
    path.write_text(DEFAULT.replace("timeout: 5.0,", "timeout: 5,"), encoding="utf-8")
    assert run_flotilla("check", str(path)).returncode == 0
