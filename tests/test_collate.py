"""Tokenisation with an action mask, and collation into action-aligned (B, T) tensors (§7)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dqo_tutorial.collate import DQOCollator, example_from_ids, tokenize_example
from dqo_tutorial.tokenization import _tiny_corpus, tiny_tokenizer

# ------------------------------------------------------------------- collator, exact tensors

EXAMPLES = [
    {
        "input_ids": [5, 6, 7, 8],
        "action_mask": [0, 0, 1, 1],
        "behavior_logps": [0.0, 0.0, -1.0, -2.0],
        "reward": 1.0,
        "terminal": True,
        "prompt": "a",
    },
    {
        "input_ids": [9, 10],
        "action_mask": [0, 1],
        "behavior_logps": [0.0, -0.5],
        "reward": 0,
        "terminal": False,
        "prompt": "b",
    },
    {
        "input_ids": [11, 12, 13],
        "action_mask": [0, 1, 1],
        "behavior_logps": [0.0, -0.25, -0.75],
        "reward": 1,
        "terminal": True,
        "prompt": "c",
    },
]


def check_common(batch):
    assert torch.equal(batch["reward"], torch.tensor([1.0, 0.0, 1.0]))
    assert batch["reward"].dtype == torch.float32  # one float among ints → float32
    assert torch.equal(batch["terminal"], torch.tensor([True, False, True]))
    assert batch["prompt"] == ["a", "b", "c"]
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.long
    assert batch["action_mask"].dtype == torch.bool
    assert batch["behavior_logps"].dtype == torch.float32


def test_collate_right_padding_exact():
    batch = DQOCollator(pad_token_id=0, padding_side="right")(EXAMPLES)
    assert torch.equal(
        batch["input_ids"], torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0], [11, 12, 13, 0]])
    )
    assert torch.equal(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    )
    assert torch.equal(
        batch["action_mask"], torch.tensor([[0, 0, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0]]).bool()
    )
    assert torch.equal(
        batch["behavior_logps"],
        torch.tensor([[0.0, 0.0, -1.0, -2.0], [0.0, -0.5, 0.0, 0.0], [0.0, -0.25, -0.75, 0.0]]),
    )
    check_common(batch)


def test_collate_left_padding_exact():
    batch = DQOCollator(pad_token_id=99, padding_side="left")(EXAMPLES)
    assert torch.equal(
        batch["input_ids"], torch.tensor([[5, 6, 7, 8], [99, 99, 9, 10], [99, 11, 12, 13]])
    )
    assert torch.equal(
        batch["attention_mask"], torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]])
    )
    assert torch.equal(
        batch["action_mask"], torch.tensor([[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 1, 1]]).bool()
    )
    assert torch.equal(
        batch["behavior_logps"],
        torch.tensor([[0.0, 0.0, -1.0, -2.0], [0.0, 0.0, 0.0, -0.5], [0.0, 0.0, -0.25, -0.75]]),
    )
    check_common(batch)


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_pad_to_multiple_of(side):
    examples = [
        {"input_ids": [1, 2, 3, 4, 5], "action_mask": [0, 0, 1, 1, 1]},
        {"input_ids": [6, 7], "action_mask": [0, 1]},
    ]
    batch = DQOCollator(pad_token_id=0, padding_side=side, pad_to_multiple_of=4)(examples)
    if side == "right":
        ids = [[1, 2, 3, 4, 5, 0, 0, 0], [6, 7, 0, 0, 0, 0, 0, 0]]
        att = [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]]
        act = [[0, 0, 1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
    else:
        ids = [[0, 0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0, 6, 7]]
        att = [[0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1]]
        act = [[0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1]]
    assert torch.equal(batch["input_ids"], torch.tensor(ids))
    assert torch.equal(batch["attention_mask"], torch.tensor(att))
    assert torch.equal(batch["action_mask"], torch.tensor(act).bool())
    # already a multiple: unchanged length
    assert DQOCollator(0, pad_to_multiple_of=2)(examples[1:])["input_ids"].shape == (1, 2)


def test_collate_dtypes_tensors_and_explicit_attention_mask():
    examples = [
        {
            "input_ids": torch.tensor([3, 4, 5]),
            "action_mask": [0, 1, 1],
            "attention_mask": [1, 1, 1],
            "ref_logps": torch.tensor([0.0, -1.0, -2.0]),
            "n_steps": 2,
            "terminal": torch.tensor(True),
        },
        {
            "input_ids": [6],
            "action_mask": [1],
            "attention_mask": [1],
            "ref_logps": [-3.0],
            "n_steps": 1,
            "terminal": False,
        },
    ]
    batch = DQOCollator(pad_token_id=0)(examples)
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert torch.equal(batch["ref_logps"], torch.tensor([[0.0, -1.0, -2.0], [-3.0, 0.0, 0.0]]))
    assert batch["n_steps"].dtype == torch.long and batch["n_steps"].tolist() == [2, 1]
    assert batch["terminal"].dtype == torch.bool and batch["terminal"].tolist() == [True, False]


def test_collate_errors_name_field_and_example():
    bad = [dict(EXAMPLES[0]), dict(EXAMPLES[1], ref_logps=[0.0]), dict(EXAMPLES[2])]
    bad[0]["ref_logps"] = [0.0, 0.0, -1.0, -2.0]
    bad[2]["ref_logps"] = [0.0, 0.0, -1.0]
    with pytest.raises(ValueError, match=r"example 1: per-token field 'ref_logps' has length 1"):
        DQOCollator(pad_token_id=0)(bad)
    with pytest.raises(ValueError, match=r"example 2: per-token field 'action_mask'"):
        DQOCollator(pad_token_id=0)([EXAMPLES[0], EXAMPLES[1], dict(EXAMPLES[2], action_mask=[1])])
    with pytest.raises(ValueError, match=r"example 1: fields \['reward'\]"):
        no_reward = {k: v for k, v in EXAMPLES[1].items() if k != "reward"}
        DQOCollator(pad_token_id=0)([EXAMPLES[0], no_reward])
    with pytest.raises(ValueError, match="empty"):
        DQOCollator(pad_token_id=0)([])
    with pytest.raises(ValueError, match="padding_side"):
        DQOCollator(pad_token_id=0, padding_side="center")


# --------------------------------------------------------------------------- tokenize_example


def action_text(tok, ex):
    return tok.decode([t for t, m in zip(ex["input_ids"], ex["action_mask"]) if m])


def test_tokenize_example_basic(tiny_tok):
    prompt = tiny_tok.apply_chat_template(
        [{"role": "user", "content": "Question: Tom has 12 apples and gets 34 more."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    response = "Answer: 12 + 34 = <<12+34=46>>46\n#### 46"
    ex = tokenize_example(tiny_tok, prompt, response)
    assert not ex["terminal"] and not ex["straddles_boundary"]
    assert action_text(tiny_tok, ex) == response
    n_prompt = ex["action_mask"].index(1)
    assert tiny_tok.decode(ex["input_ids"][:n_prompt]) == prompt
    assert ex["action_mask"] == [0] * n_prompt + [1] * (len(ex["input_ids"]) - n_prompt)

    ended = tokenize_example(tiny_tok, prompt, response, add_eos=True)
    assert ended["terminal"] and ended["input_ids"][-1] == tiny_tok.eos_token_id
    assert ended["input_ids"][:-1] == ex["input_ids"] and ended["action_mask"][-1] == 1
    assert tokenize_example(tiny_tok, prompt, response + "<|im_end|>")["terminal"]  # EOS as text

    empty = tokenize_example(tiny_tok, prompt, "")
    assert sum(empty["action_mask"]) == 0 and not empty["terminal"]
    assert sum(tokenize_example(tiny_tok, prompt, "", add_eos=True)["action_mask"]) == 1


def find_boundary_merges(tok):
    """Splits of corpus lines where tokenising prompt and response apart ≠ jointly."""

    def enc(s):
        return tok(s, add_special_tokens=False)["input_ids"]

    found = []
    for line in _tiny_corpus()[:5]:
        for k in range(1, len(line)):
            prompt, response = line[:k], line[k:]
            if enc(prompt) + enc(response) != enc(line):
                found.append((prompt, response))
    return found


def test_bpe_merge_across_boundary_breaks_length_based_mask(tiny_tok):
    cases = find_boundary_merges(tiny_tok)
    # e.g. prompt "... What is 1" + response "2 + ..." → the joint text has the token " 12"
    numeric = [(p, r) for p, r in cases if p[-1].isdigit() and r[0].isdigit()]
    assert numeric, "the tiny BPE should merge digits across the boundary"
    naive_loses_response = []
    for prompt, response in cases:
        text = prompt + response
        joint = tiny_tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = joint["input_ids"], joint["offset_mapping"]
        n_naive = len(tiny_tok(prompt, add_special_tokens=False)["input_ids"])
        naive_mask = [0] * n_naive + [1] * (len(ids) - n_naive)
        if offsets[0][1] > len(prompt):  # one token swallows the whole prompt: nothing is prompt
            with pytest.raises(ValueError, match="empty prompt"):
                tokenize_example(tiny_tok, prompt, response)
            continue
        ex = tokenize_example(tiny_tok, prompt, response)
        assert ex["input_ids"] == ids and ex["straddles_boundary"]
        response_chars = set(range(len(prompt), len(text)))
        # ours: every response character lies inside some action token
        assert response_chars <= covered_chars(offsets, ex["action_mask"])
        assert action_text(tiny_tok, ex).endswith(response)
        # naive: the action tokens never decode to the response, and may even drop some of it
        assert tiny_tok.decode(ids[n_naive:]) != response
        if not response_chars <= covered_chars(offsets, naive_mask):
            naive_loses_response.append((prompt, response))
    assert naive_loses_response, "expected a case where len(tokenize(prompt)) drops response text"
    # the classic one: "... is 1" + "2 ..." → " 12" is one token, the prompt alone ends in " 1"
    assert any(p.endswith(" 1") and r.startswith("2") for p, r in naive_loses_response)


def covered_chars(offsets, mask):
    return {c for (s, e), m in zip(offsets, mask) if m for c in range(s, e)}


def test_tokenize_example_straddling_token_counts_as_action(tiny_tok):
    ex = tokenize_example(tiny_tok, "Answer: 1", "2 apples")
    assert tiny_tok.convert_ids_to_tokens(ex["input_ids"]) == ["Answer", ":", "Ġ12", "Ġapples"]
    assert ex["action_mask"] == [0, 0, 1, 1] and ex["straddles_boundary"]
    clean = tokenize_example(tiny_tok, "Answer:", " 12 apples")  # same ids, clean boundary
    assert clean["input_ids"] == ex["input_ids"] and not clean["straddles_boundary"]
    assert action_text(tiny_tok, clean) == " 12 apples"


_TEXT = st.text(alphabet=st.sampled_from(list("0123456789 +-*=#<>\n:?QAaeinost.,é")), max_size=30)


@settings(max_examples=200, deadline=None)
@given(prompt=_TEXT, response=_TEXT)
def test_tokenize_example_invariants(prompt, response):
    tok = tiny_tokenizer()
    offsets = tok(prompt + response, add_special_tokens=False, return_offsets_mapping=True)
    offsets = offsets["offset_mapping"]
    if not prompt or not offsets or offsets[0][1] > len(prompt):  # no token is prompt only
        with pytest.raises(ValueError, match="empty prompt"):
            tokenize_example(tok, prompt, response)
        return
    ex = tokenize_example(tok, prompt, response)
    mask = ex["action_mask"]
    n_prompt = mask.index(1) if 1 in mask else len(mask)
    assert mask == [0] * n_prompt + [1] * (len(mask) - n_prompt)  # one contiguous block at the end
    assert tok.decode(ex["input_ids"]) == prompt + response
    actions = tok.decode(ex["input_ids"][n_prompt:])
    if ex["straddles_boundary"]:
        assert actions.endswith(response) and len(actions) > len(response)
    else:
        assert actions == response and tok.decode(ex["input_ids"][:n_prompt]) == prompt


def test_example_from_ids():
    ex = example_from_ids([1, 2, 3], [4, 5, 2], eos_token_id=2)
    assert ex == {
        "input_ids": [1, 2, 3, 4, 5, 2],
        "action_mask": [0, 0, 0, 1, 1, 1],
        "terminal": True,
        "straddles_boundary": False,
    }
    assert not example_from_ids([1], [4, 5], eos_token_id=2)["terminal"]
    assert not example_from_ids([1], [], eos_token_id=2)["terminal"]


def test_tokenize_then_collate_end_to_end(tiny_tok):
    prompt = tiny_tok.apply_chat_template(
        [{"role": "user", "content": "What is 3 + 4?"}], tokenize=False, add_generation_prompt=True
    )
    examples = [
        tokenize_example(tiny_tok, prompt, r, add_eos=e)
        for r, e in [("3 + 4 = 7\n#### 7", True), ("#### 8", False)]
    ]
    batch = DQOCollator(tiny_tok.pad_token_id, padding_side="left")(examples)
    for row, ex in enumerate(examples):
        keep = batch["attention_mask"][row].bool()
        assert batch["input_ids"][row][keep].tolist() == ex["input_ids"]
        assert batch["action_mask"][row][keep].long().tolist() == ex["action_mask"]
    assert batch["terminal"].tolist() == [True, False]
    assert not batch["action_mask"][:, 0].any()  # column 0 is never an action


# --------------------------------------------------------------------------- real SmolLM2 tokenizer

QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
    "clips in May. How many clips did Natalia sell altogether in April and May?"
)
ANSWER = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"
)


@pytest.mark.slow
def test_smollm2_tokenizer_action_mask(smollm2_tokenizer):
    tok = smollm2_tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ex = tokenize_example(tok, prompt, ANSWER, add_eos=True)
    assert ex["terminal"] and not ex["straddles_boundary"]
    assert ex["input_ids"][-1] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert action_text(tok, ex) == ANSWER + "<|im_end|>"
    n_prompt = ex["action_mask"].index(1)
    assert tok.decode(ex["input_ids"][:n_prompt]) == prompt
    # with the chat template the boundary is clean, so the naive split agrees here
    assert n_prompt == len(tok(prompt, add_special_tokens=False)["input_ids"])
    # a raw-text prompt ending in a space: SmolLM2 splits digits and spaces, still clean
    raw = tokenize_example(tok, "Answer: ", "72")
    assert action_text(tok, raw) == "72" and not raw["straddles_boundary"]


@pytest.mark.parametrize("make", ["text", "ids"])
def test_an_empty_prompt_is_refused_with_the_reason(make, tiny_tok):
    from dqo_tutorial.collate import example_from_ids, tokenize_example

    with pytest.raises(ValueError, match="empty prompt: .*column 0 is never an action"):
        if make == "text":
            tokenize_example(tiny_tok, "", "12 + 3 = 15", add_eos=True)
        else:
            example_from_ids([], [5, 6, 2])


class _Offsets:
    """A stand-in fast tokenizer whose encoding is given: ids and character offsets."""

    is_fast, eos_token_id = True, 9

    def __init__(self, offsets):
        self.offsets = offsets

    def __call__(self, text, **_):
        return {"input_ids": list(range(len(self.offsets))), "offset_mapping": self.offsets}


def test_a_tokenizer_without_is_fast_is_refused():
    """No ``is_fast`` attribute is not a fast tokenizer (the offsets are needed). Kills the
    ``getattr(tokenizer, "is_fast", False)`` default turned True."""

    class Bare:
        eos_token_id = 9

    with pytest.raises(TypeError, match="fast tokenizer"):
        tokenize_example(Bare(), "ab", "cd")


def test_a_zero_width_token_at_the_boundary_is_an_action():
    """Offsets (0, 2), (2, 2), (2, 4) for "ab" + "cd": the zero-width token starts at the
    response, so it is its first action. Kills ``start >= boundary`` → ``start > boundary``."""
    ex = tokenize_example(_Offsets([(0, 2), (2, 2), (2, 4)]), "ab", "cd")
    assert ex["action_mask"] == [0, 1, 1] and not ex["straddles_boundary"]


def test_a_one_character_prompt_whose_text_no_token_covers_straddles():
    """``"a" + "bc"`` with offsets (0, 0), (1, 3): the prompt's last token ends before the
    prompt's end, so the boundary falls inside the tokenisation. Kills ``boundary > 0`` →
    ``boundary > 1`` (a one-character prompt was then never checked)."""
    ex = tokenize_example(_Offsets([(0, 0), (1, 3)]), "a", "bc")
    assert ex["action_mask"] == [0, 1] and ex["straddles_boundary"]


@pytest.mark.parametrize("side", ["right", "left"])
def test_pre_tensorised_fields_pad_like_lists_by_hand(side):
    """Tensors take the one ``pad_sequence`` path: lengths 3 and 1, rounded up to T = 4, pad on
    each side, checked against tensors written out. Kills ``batch_first`` flipped and a wrong
    ``pad_to_multiple_of`` width or side in ``_pad_tensors``."""
    examples = [
        {"input_ids": torch.tensor([5, 6, 7]), "action_mask": torch.tensor([0, 1, 1]),
         "rewards": torch.tensor([0.0, 0.5, 1.0])},
        {"input_ids": torch.tensor([8]), "action_mask": torch.tensor([0]),
         "rewards": torch.tensor([2.0])},
    ]  # fmt: skip
    batch = DQOCollator(pad_token_id=0, padding_side=side, pad_to_multiple_of=4)(examples)
    if side == "right":
        ids, rewards = [[5, 6, 7, 0], [8, 0, 0, 0]], [[0.0, 0.5, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]]
    else:
        ids, rewards = [[0, 5, 6, 7], [0, 0, 0, 8]], [[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 0.0, 2.0]]
    assert batch["input_ids"].tolist() == ids
    assert batch["rewards"].tolist() == rewards
    assert batch["attention_mask"].tolist() == [[int(t != 0) for t in row] for row in ids]
    listed = DQOCollator(pad_token_id=0, padding_side=side, pad_to_multiple_of=4)(
        [{k: v.tolist() for k, v in ex.items()} for ex in examples]
    )
    assert all(torch.equal(listed[k], batch[k]) for k in batch)


def test_pad_to_multiple_of_one_is_no_rounding():
    """1 is a positive integer (no rounding); 0 is refused. Kills ``< 1`` → ``< 2``."""
    batch = DQOCollator(pad_token_id=0, pad_to_multiple_of=1)(
        [{"input_ids": [4, 5, 6], "action_mask": [0, 1, 1]}]
    )
    assert batch["input_ids"].shape == (1, 3)
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        DQOCollator(pad_token_id=0, pad_to_multiple_of=0)
