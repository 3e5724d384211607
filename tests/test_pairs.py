"""Paired AB/BA statistics on synthetic pairs with a known effect."""
import math
import random

from analysis import pairs as P


def legs(effect_ms: float, n: int, noise_ms: float = 2.0, order_effect_ms: float = 0.0, seed: int = 7,
         errors: int = 0) -> list:
    """n pairs, alternating B1_B2 / B2_B1; B2 is ``effect_ms`` slower; the second leg of a pair is
    ``order_effect_ms`` slower than it would be (a warm-up the first leg leaves behind, say)."""
    rng = random.Random(seed)
    out = []
    for pair in range(n):
        order = "B1_B2" if pair % 2 == 0 else "B2_B1"
        drift = rng.uniform(0, 50)                     # the machine drifts; both legs of a pair share it
        for position, mode in enumerate(order.split("_")):
            value = 100 + drift + (effect_ms if mode == "B2" else 0) + rng.gauss(0, noise_ms) + \
                position * order_effect_ms
            out.append(P.Leg(pair, order, mode, {"ttfc_p50_ms": value}, errors=errors if pair == 0 else 0))
    return out


def test_a_known_effect_is_inside_the_interval_and_decision_grade():
    data = legs(effect_ms=-20.0, n=8)
    c = P.compare(data, "ttfc_p50_ms")
    assert len(c.deltas) == 8 and c.ci[0] < -20 < c.ci[1] and c.excludes_zero
    assert c.wilcoxon_p <= 2 / 2 ** 8 + 1e-12 and c.sign_p <= 2 / 2 ** 8 + 1e-12   # all 8 deltas negative
    v = P.verdict(data, [c], mechanism_seen=True)
    assert v == {"decision_grade": True, "reasons": ["OK"], "primary_metric": "ttfc_p50_ms"}


def test_no_effect_is_not_decision_grade():
    data = legs(effect_ms=0.0, n=8, noise_ms=5.0, seed=3)
    c = P.compare(data, "ttfc_p50_ms")
    assert not c.excludes_zero and "INTERVAL_INCLUDES_ZERO" in c.reasons
    assert c.wilcoxon_p > 0.05
    assert P.verdict(data, [c], mechanism_seen=True)["decision_grade"] is False


def test_a_planted_order_effect_is_flagged():
    data = legs(effect_ms=-20.0, n=8, order_effect_ms=15.0)
    c = P.compare(data, "ttfc_p50_ms")
    # B1_B2 pairs: B2 second, delta -20 + 15; B2_B1 pairs: B1 second, delta -20 - 15
    assert abs(c.order_diff - 30) < 5 and "ORDER_EFFECT_TTFC_P50_MS" in c.reasons
    v = P.verdict(data, [c], mechanism_seen=True)
    assert not v["decision_grade"] and "ORDER_EFFECT_TTFC_P50_MS" in v["reasons"]


def test_errors_missing_mechanism_and_few_pairs_each_block():
    assert "RUN_ERRORS_PRESENT" in P.verdict(legs(-20, 6, errors=3), [P.compare(legs(-20, 6), "ttfc_p50_ms")],
                                             True)["reasons"]
    c = P.compare(legs(-20, 6), "ttfc_p50_ms")
    assert P.verdict(legs(-20, 6), [c], mechanism_seen=None)["reasons"] == ["TELEMETRY_MISSING"]
    assert P.verdict(legs(-20, 6), [c], mechanism_seen=False)["reasons"] == ["GATE_NO_SSD_MECHANISM_SIGNAL"]
    two = P.compare(legs(-20, 2), "ttfc_p50_ms")
    assert math.isnan(two.ci[0]) and "TOO_FEW_PAIRS" in two.reasons
    fallback = [P.Leg(x.pair, x.order, x.mode, x.metrics, metric_used="ttft") for x in legs(-20, 6)]
    v = P.verdict(fallback, [P.compare(fallback, "ttfc_p50_ms")], True)
    assert v["decision_grade"] and v["reasons"] == ["METRIC_FALLBACK_TTFT"]      # said, not blocking


def test_exact_tests_match_their_textbook_values():
    assert P.wilcoxon_p([1, 2, 3, 4, 5, 6]) == 2 / 64
    assert P.sign_p([1, 2, 3, 4, 5, 6]) == 2 / 64
    assert P.sign_p([1, -1, 2, -2]) == 1.0
    # n=5, ranks 1..5 with rank 1 negative: W+ = 14; P(|W+ - 7.5| >= 6.5) = 4/32
    assert P.wilcoxon_p([-1, 2, 3, 4, 5]) == 4 / 32
