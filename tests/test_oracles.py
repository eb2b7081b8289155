"""Oracles: closed-vocabulary grammar, sentence-embedding semantic oracle, action oracle."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rs_guard_ros.oracles import UNKNOWN, Oracle, make_oracle
from rs_guard_ros.oracles.action import ActionOracle, twist_prototypes
from rs_guard_ros.config import DEMO_COMMANDS
from rs_guard_ros.oracles.grammar import GrammarOracle, normalize
from rs_guard_ros.oracles.semantic import SemanticOracle, default_model_dir, load_embedder

DEMO = {c: list(cmd.phrases) for c, cmd in DEMO_COMMANDS.items()}
PHRASES = [(c, p) for c, ps in DEMO.items() for p in ps]
REFUSALS = ["i cannot help with that", "i see nothing useful"]
GRAMMAR = GrammarOracle(DEMO)

# ---------------------------------------------------------------- grammar

WHITESPACE = st.text(alphabet=" \t\n\u00a0\u3000", min_size=1, max_size=3)
EDGE = st.text(alphabet=" \t\n\"'()[]«»*:;-.,!", max_size=4)


@st.composite
def phrase_variants(draw) -> tuple[str, str]:
    """A configured phrase with random case, inner whitespace, dropped punctuation and edges."""
    command, phrase = draw(st.sampled_from(PHRASES))
    words = []
    for word in phrase.split():
        word = "".join(ch.upper() if draw(st.booleans()) else ch for ch in word)
        words.append(word + draw(st.sampled_from(["", "", ",", ".", "!", "!!"])))
    inner = "".join(w + draw(WHITESPACE) for w in words[:-1]) + words[-1]
    return command, draw(EDGE) + inner + draw(EDGE)


@given(phrase_variants())
def test_every_phrase_maps_to_its_command_under_case_whitespace_punctuation_variations(case):
    command, text = case
    assert GRAMMAR([text]) == [command]


NORMALISED = {normalize(p): c for c, p in PHRASES}


@given(st.text())
def test_arbitrary_text_never_raises_and_is_unknown_unless_it_normalises_to_a_phrase(text):
    assert GRAMMAR([text]) == [NORMALISED.get(normalize(text))]


def test_demo_model_refusals_and_questions_are_unknown():
    outputs = REFUSALS + ["turn left?", "left?", "don't turn left", "turn left or right", "go back", ""]
    assert GRAMMAR(outputs) == [UNKNOWN] * len(outputs)


def test_non_text_outputs_are_unknown():
    assert GRAMMAR([None, 3, b"stop", np.array([1.0]), ["stop"]]) == [UNKNOWN] * 5


def test_phrase_claimed_by_two_commands_names_both():
    with pytest.raises(ValueError, match=r"'left'.*'right'"):
        GrammarOracle({"left": ["go there"], "right": ["Go there!"]})


def test_patterns_must_match_the_whole_normalised_text():
    oracle = GrammarOracle({"left": ["turn left"]}, patterns={"left": [r"turn left( now)?"]})
    assert oracle(["Turn left, now!", "turn left later", "please turn left now"]) == ["left", None, None]


def test_output_matched_by_two_commands_patterns_is_unknown():
    oracle = GrammarOracle({"left": [], "right": []}, patterns={"left": [r"go \w+"], "right": [r"\w+ right"]})
    assert oracle(["go left", "go right", "veer right"]) == ["left", UNKNOWN, "right"]


def test_pattern_matching_another_commands_phrase_is_a_config_error():
    with pytest.raises(ValueError, match=r"'left'.*'right'"):
        GrammarOracle({"left": ["go left"]}, patterns={"right": [r"go \w+"]})


def test_invalid_pattern_names_its_command():
    with pytest.raises(ValueError, match="patterns\\['left'\\]"):
        GrammarOracle({"left": ["turn left"]}, patterns={"left": ["(unclosed"]})


def test_batch_keeps_order_and_maps_repeats():
    batch = ["turn left", "stop", "Turn left.", "nonsense"] * 75
    assert GRAMMAR(batch) == ["left", "stop", "left", None] * 75


def test_make_oracle_builds_each_kind_from_vocabularies():
    assert isinstance(make_oracle("grammar", DEMO), Oracle)
    assert make_oracle("grammar", DEMO_COMMANDS)(["Veer left!"]) == ["left"]  # the typed configuration
    logits = make_oracle("action", DEMO_COMMANDS, tolerance=0.5)  # tolerance is unused for logits
    assert logits([[0.0, 0.0, 3.0, 0.0]]) == ["right"]
    actions = make_oracle("action", {c: {"prototype": v} for c, v in TWIST.items()})
    assert actions([[0.0, 0.9]]) == ["left"]
    with pytest.raises(ValueError, match="kind"):
        make_oracle("telepathy", DEMO)
    with pytest.raises(ValueError, match="UNKNOWN"):
        make_oracle("grammar", {"UNKNOWN": ["x"]})


# ---------------------------------------------------------------- semantic


class CountingEmbedder:
    """Wraps an embedder and records every text it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.texts: list[str] = []
        self.calls = 0

    def __call__(self, texts):
        self.calls += 1
        self.texts.extend(texts)
        return self.inner(texts)


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2, loaded once for the whole test session (offline)."""
    return load_embedder(str(default_model_dir()), "cpu")


@pytest.fixture
def semantic(minilm):
    """A semantic oracle on the demo phrases whose model inputs are recorded."""
    counter = CountingEmbedder(minilm)
    oracle = SemanticOracle(DEMO, embedder=counter)
    counter.texts.clear()
    counter.calls = 0
    return oracle, counter


def test_bundled_model_gives_unit_norm_sentence_embeddings(minilm):
    rows = minilm(["turn left", "the weather is nice"])
    assert rows.shape == (2, 384)
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)


def test_paraphrases_map_to_their_command(semantic):
    oracle, _ = semantic
    outputs = ["please go straight", "keep moving forward", "please turn left", "turn left now",
               "please turn right", "make a right turn", "please stop", "stop here"]
    assert oracle(outputs) == ["forward", "forward", "left", "left", "right", "right", "stop", "stop"]


def test_unrelated_sentences_and_refusals_are_unknown_by_similarity_alone(minilm):
    oracle = SemanticOracle(DEMO, veto=(), embedder=minilm)
    outputs = ["the weather is nice today", "pick up the cube", *REFUSALS]
    assert oracle(outputs) == [UNKNOWN] * len(outputs)


def test_veto_rejects_negations_and_questions_that_embeddings_miss(minilm):
    outputs = ["do not go left", "never go straight", "turn left?"]
    assert SemanticOracle(DEMO, embedder=minilm)(outputs) == [UNKNOWN] * 3
    assert SemanticOracle(DEMO, veto=(), embedder=minilm)(outputs) == ["left", "forward", "left"]


def test_repeated_outputs_are_embedded_once_per_distinct_text(semantic):
    oracle, counter = semantic
    batch = ["please go straight", "please  go straight", "turn left now", "the sky is blue"] * 100
    first = oracle(batch)
    assert sorted(counter.texts) == ["please go straight", "the sky is blue", "turn left now"]
    assert counter.calls == 1
    assert oracle(batch) == first
    assert counter.calls == 1  # served from the cache across calls


def test_least_recently_used_embeddings_are_evicted(minilm):
    counter = CountingEmbedder(minilm)
    oracle = SemanticOracle(DEMO, cache_size=2, embedder=counter)
    counter.texts.clear()
    oracle(["please stop"])
    oracle(["turn left now"])
    oracle(["please stop"])  # refreshes "please stop"
    oracle(["keep moving forward"])  # evicts "turn left now"
    oracle(["please stop", "turn left now"])
    assert counter.texts == ["please stop", "turn left now", "keep moving forward", "turn left now"]


def test_exact_prototypes_and_blank_or_non_text_outputs_skip_the_model(semantic):
    oracle, counter = semantic
    assert oracle(["Rotate left a bit.", "STOP!", "", "   ", None, 42]) == ["left", "stop"] + [UNKNOWN] * 4
    assert counter.texts == []


def fixed_embedder(table: dict[str, list[float]]):
    """An embedder that returns hand-picked unit vectors, to test the decision rule exactly."""
    return lambda texts: np.array([np.asarray(table[t]) / np.linalg.norm(table[t]) for t in texts])


@pytest.mark.parametrize("vector, expected", [
    ([0.9, 0.1, math.sqrt(1 - 0.82)], "a"),  # sim 0.9 vs 0.1: clear winner
    ([0.72, 0.69, math.sqrt(1 - 0.72**2 - 0.69**2)], UNKNOWN),  # above floor, margin 0.03 < 0.05
    ([0.6, 0.0, 0.8], UNKNOWN),  # below the floor
])
def test_floor_and_margin_decide_between_commands(vector, expected):
    embed = fixed_embedder({"alpha": [1, 0, 0], "beta": [0, 1, 0], "query": vector})
    oracle = SemanticOracle({"a": ["alpha"], "b": ["beta"]}, floor=0.7, margin=0.05, veto=(), embedder=embed)
    assert oracle(["query"]) == [expected]


def test_command_without_prototypes_is_never_output_but_allowed():
    embed = fixed_embedder({"alpha": [1, 0], "query": [1, 0.1]})
    oracle = SemanticOracle({"a": ["alpha"], "stop": []}, veto=(), embedder=embed)
    assert oracle(["query", "alpha"]) == ["a", "a"]


def test_semantic_config_errors_name_the_argument():
    embed = fixed_embedder({"x": [1.0, 0.0]})
    with pytest.raises(ValueError, match=r"'a'.*'b'"):
        SemanticOracle({"a": ["x"], "b": ["X!"]}, embedder=embed)
    with pytest.raises(ValueError, match="floor"):
        SemanticOracle({"a": ["x"]}, floor=1.5, embedder=embed)
    with pytest.raises(ValueError, match="prototypes"):
        SemanticOracle({"a": []}, embedder=embed)
    with pytest.raises(ValueError, match="embedder"):
        SemanticOracle({"a": ["x"]}, embedder=lambda texts: np.zeros((5, 2)))


# ---------------------------------------------------------------- action

COMMANDS = ["forward", "left", "right", "stop"]
TWIST = {"forward": [0.5, 0.0], "left": [0.0, 1.0], "right": [0.0, -1.0], "stop": [0.0, 0.0]}


def test_logits_map_to_their_argmax():
    oracle = ActionOracle(COMMANDS)
    out = oracle([[0.1, 2.0, -1.0, 0.5], np.array([3.0, 0, 0, 0], np.float32), torch.tensor([0.0, 0, 0, 1]),
                  torch.tensor([0.0, 0, 2, 1], dtype=torch.bfloat16), [-np.inf, 0.0, -np.inf, -np.inf]])
    assert out == ["left", "forward", "stop", "right", "left"]


@pytest.mark.parametrize("bad", [[1.0, 1.0, 0.0, 0.0], [np.nan, 1, 0, 0], [np.inf, 0, 0, 0],
                                 [-np.inf] * 4, [1.0, 2.0, 3.0], [[1.0, 0, 0, 0]], "left", None, [True] * 4])
def test_malformed_or_tied_logits_are_unknown(bad):
    assert ActionOracle(COMMANDS)([bad]) == [UNKNOWN]


def test_action_within_tolerance_maps_to_nearest_prototype():
    oracle = ActionOracle(COMMANDS, prototypes=TWIST)
    assert oracle.tolerance == pytest.approx(0.25)  # half the forward-stop distance
    assert oracle([[0.45, 0.05], [0.02, -0.9], [0.0, 0.1]]) == ["forward", "right", "stop"]


def test_action_outside_tolerance_or_not_finite_is_unknown():
    oracle = ActionOracle(COMMANDS, prototypes=TWIST, tolerance=0.1)
    assert oracle([[0.3, 0.3], [0.0, 0.85], [np.nan, 0.0], [0.5, np.inf], [0.5, 0.0, 0.0]]) == [UNKNOWN] * 5


def test_action_config_errors_name_the_argument():
    with pytest.raises(ValueError, match="prototypes"):
        ActionOracle(COMMANDS, prototypes={"fly": [1.0, 0.0]})
    with pytest.raises(ValueError, match="prototypes"):
        ActionOracle(COMMANDS, prototypes={"left": [1.0, 0.0], "right": [1.0]})
    with pytest.raises(ValueError, match="tolerance"):
        ActionOracle(COMMANDS, prototypes=TWIST, tolerance=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        ActionOracle(COMMANDS, prototypes={"stop": [0.0, 0.0]})


# OpenVLA's 7-DoF action (dx, dy, dz, droll, dpitch, dyaw, gripper) per 5 Hz step, read as a Twist.
OPENVLA_AXES = {"linear_x": (0, 5.0), "angular_z": (5, 5.0)}
ARRAYS = hnp.arrays(dtype=st.sampled_from([np.float64, np.float32, np.int64, np.bool_, np.complex64]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))


@settings(max_examples=200)
@given(st.one_of(ARRAYS, st.lists(st.one_of(st.floats(), st.integers(), st.text(max_size=2), st.none()),
                                  max_size=5)))
def test_arbitrary_arrays_never_raise(output):
    for oracle in (ActionOracle(COMMANDS), ActionOracle(COMMANDS, prototypes=TWIST),
                   ActionOracle(COMMANDS, prototypes=TWIST, axes=OPENVLA_AXES)):
        assert oracle([output])[0] in (*COMMANDS, UNKNOWN)


@given(hnp.arrays(np.float64, 4, elements=st.floats(-1e6, 1e6)))
def test_finite_logits_with_a_unique_max_give_that_command(logits):
    expected = COMMANDS[int(np.argmax(logits))] if np.sum(logits == logits.max()) == 1 else UNKNOWN
    assert ActionOracle(COMMANDS)([logits]) == [expected]


def test_actions_read_as_twists_map_to_the_command_with_the_nearest_twist():
    oracle = ActionOracle(COMMANDS, prototypes=TWIST, tolerance=0.2, axes=OPENVLA_AXES)
    forward = [0.1, 0.03, -0.02, 0.1, 0.1, 0.0, 1.0]  # dx 0.1 m/step -> 0.5 m/s; arm-only dims ignored
    left = [0.0, 0.0, 0.0, 0.0, 0.0, 0.19, 0.0]  # dyaw 0.19 rad/step -> 0.95 rad/s
    right = np.array([0.01, 0, 0, 0, 0, -0.2, 1], np.float32)
    still = torch.zeros(7, dtype=torch.bfloat16)
    far = [0.0, 0, 0, 0, 0, 0.1, 0]  # 0.5 rad/s: 0.5 from left and from stop
    assert oracle([forward, left, right, still, far]) == ["forward", "left", "right", "stop", UNKNOWN]


@pytest.mark.parametrize("action", [[0.1, 0, 0, 0, 0], [0.1] * 4, [np.nan, 0, 0, 0, 0, 0.2], [1e308, 0, 0, 0, 0, 0]])
def test_an_action_too_short_for_a_mapped_element_or_not_finite_there_is_unknown(action):
    assert ActionOracle(COMMANDS, prototypes=TWIST, axes=OPENVLA_AXES)([action]) == [UNKNOWN]


def test_a_non_finite_element_outside_the_mapping_does_not_matter_to_the_oracle():
    assert ActionOracle(COMMANDS, prototypes=TWIST, axes=OPENVLA_AXES)([[0.1, 0, 0, 0, 0, 0, np.nan]]) == ["forward"]


def test_twist_prototypes_are_each_commands_own_twist_on_the_mapped_fields():
    vocab = twist_prototypes(DEMO_COMMANDS, OPENVLA_AXES)
    assert vocab == {"forward": {"prototype": [0.25, 0.0]}, "left": {"prototype": [0.0, 0.6]},
                     "right": {"prototype": [0.0, -0.6]}, "stop": {"prototype": [0.0, 0.0]}}
    oracle = make_oracle("action", vocab, tolerance=0.2, axes=OPENVLA_AXES)
    assert oracle([[0.05, 0, 0, 0, 0, 0.0], [0, 0, 0, 0, 0, 0.12]]) == ["forward", "left"]


@pytest.mark.parametrize("kwargs,word", [
    ({"axes": OPENVLA_AXES}, "prototypes"),  # axes without the commands' Twists
    ({"prototypes": TWIST, "axes": {"angular_z": (5, 5.0)}}, "axes map 1"),
    ({"prototypes": TWIST, "axes": {"linear_x": (-1, 1.0), "angular_z": (5, 1.0)}}, "linear_x"),
    ({"prototypes": TWIST, "axes": {"linear_x": (0, 0.0), "angular_z": (5, 1.0)}}, "scale"),
    ({"prototypes": TWIST, "axes": {"linear_x": (0, 1.0), "angular_z": (True, 1.0)}}, "angular_z"),
])
def test_bad_action_axes_are_refused_naming_them(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ActionOracle(COMMANDS, **kwargs)
