"""One vocabulary: every metric name is spelled in configs/vocabulary/ and nowhere else; the rule files are
what it generates; our series follow Prometheus naming."""
import io
import re
import tokenize

from conftest import ROOT, run_module
from configs.vocabulary import rules as R
from configs.vocabulary import series as S

NAME = re.compile(r"\b(sparkrig|stacksim|dynamo|kvbm|trtllm)_[a-z]\w*|\bvllm:\w+")
# identifiers that share a prefix but name no series: configuration keys and a made-up request field
NOT_SERIES = {"kvbm_metrics_url", "kvbm_timeout_s", "kvbm_port", "sparkrig_made_up_field"}
SOURCES = ("analysis", "bench", "configs", "exporters", "grafana", "locustfiles", "prometheus", "rig", "stacksim")


def _strays(path):
    """Metric names in the string literals of a Python file; docstrings are prose and may name series."""
    tokens = list(tokenize.generate_tokens(io.StringIO(path.read_text()).readline))
    found = []
    for i, t in enumerate(tokens):
        if t.type not in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)):
            continue
        before = next((p for p in reversed(tokens[:i]) if p.type not in (tokenize.NL, tokenize.COMMENT)), None)
        docstring = t.type == tokenize.STRING and tokens[i + 1].type == tokenize.NEWLINE and (
            before is None or before.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT))
        if not docstring:
            found += [f"{path.relative_to(ROOT)}:{t.start[0]}: {m.group(0)}" for m in NAME.finditer(t.string)
                      if m.group(0) not in NOT_SERIES]
    return found


def test_no_metric_name_is_spelled_outside_the_vocabulary():
    vocabulary = ROOT / "configs" / "vocabulary"
    strays = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if vocabulary not in path.parents:
                strays += _strays(path)
    assert not strays, "metric names outside configs/vocabulary/:\n" + "\n".join(strays)


def test_the_stray_check_sees_strays(tmp_path):
    """The check above can fail: a literal in code is found, a docstring is not."""
    sample = ROOT / "configs" / "_stray_sample.py"
    try:
        sample.write_text('"""Mentions sparkrig_kv_hit_ratio in prose."""\nQ = f"rate(sparkrig_requests_total[{5}s])"\n')
        assert _strays(sample) == ["configs/_stray_sample.py:2: sparkrig_requests_total"]
    finally:
        sample.unlink()


def test_rule_files_are_what_the_vocabulary_generates():
    check = run_module("prometheus.build", "--check")
    assert check.returncode == 0, check.stderr
    assert {f.stem for f in R.FILES} == {p.name.removesuffix(".rules.yml") for p in (ROOT / "prometheus" / "rules")
                                         .glob("*.rules.yml")}


def test_our_series_follow_prometheus_naming():
    series = [v for v in vars(S).values() if isinstance(v, S.Series)]
    names = [s.name for s in series]
    assert len(names) == len(set(names)) > 60
    for s in series:
        assert s.kind in ("counter", "gauge", "histogram"), s.name
        assert not s.name.endswith("_total"), f"{s.name}: prometheus_client adds _total"
        assert re.fullmatch(r"(sparkrig|stacksim)_[a-z0-9_]+|sparkrig_memory_\w+", s.name), s.name
        if s.kind == "histogram" or s.name.endswith(("_seconds", "_bytes", "_joules")):
            assert s.name.endswith(("_seconds", "_bytes", "_joules", "_per_second")), s.name
    recorded = [r.record for f in R.FILES for r in f.rules if isinstance(r, R.Rule)]
    assert {v for k, v in vars(R).items() if k.isupper() and k[0] != "_" and isinstance(v, str)} == set(recorded)
    for name in recorded:                       # level:metric:operations
        assert re.fullmatch(r"[a-z_]+:(sparkrig|dynamo)_[a-z0-9_]+:[a-z0-9_]+", name), name
    # a field a family does not have is an error where it is asked for, not an empty panel
    import pytest
    with pytest.raises(KeyError):
        S.NVME("temperature_kelvin")
