"""The toy arithmetic-chain task: problems, splits, step checker, potentials, demos, tokenizer."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaForCausalLM

from dqo_tutorial import toy
from dqo_tutorial.collate import DQOCollator, tokenize_example
from dqo_tutorial.gsm8k import dataset_hash, extract_answer, format_gold_solution, is_correct
from dqo_tutorial.gsm8k import format_prompt as gsm8k_format_prompt
from dqo_tutorial.models import load_model_and_tokenizer, tiny_tokenizer
from dqo_tutorial.sampling import generate, process_rewards, step_boundaries

Q = "7 +5 *2 -3"
GOLD = "7+5=12\n12*2=24\n24-3=21\n#### 21"
SLIP_AT_2 = "7+5=12\n12*2=25\n25-3=22\n#### 22"


@pytest.fixture(scope="module")
def train():
    return toy.load_toy("train")


@pytest.fixture(scope="module")
def test_split():
    return toy.load_toy("test")


@pytest.fixture
def tok():
    return toy.toy_tokenizer()


# ----------------------------------------------------------------------------- problems


def test_parse_and_format_question():
    assert toy.parse_question(Q) == (7, [("+", 5), ("*", 2), ("-", 3)])
    assert toy.format_question(7, [("+", 5), ("*", 2), ("-", 3)]) == Q
    assert toy.running_values(Q) == [7, 12, 24, 21]
    assert toy.gold_solution(Q) == GOLD
    for bad in ["", "7", "7 + 5", "7 /5", "seven +5", "7 +5 *", "-7 +5", "7 +-5"]:
        with pytest.raises(ValueError, match="not a toy question"):
            toy.parse_question(bad)


def test_make_problems_deterministic_distinct_prefix_stable():
    a = toy.make_problems(300, seed=7)
    assert a == toy.make_problems(300, seed=7)
    assert a != toy.make_problems(300, seed=8)
    assert toy.make_problems(100, seed=7) == a[:100]
    assert len({p.question for p in a}) == 300
    assert [p.index for p in a] == list(range(300))
    n_ops = {len(toy.parse_question(p.question)[1]) for p in a}
    assert n_ops == {2, 3, 4}
    short = toy.make_problems(50, seed=7, min_ops=1, max_ops=1)
    assert {len(toy.parse_question(p.question)[1]) for p in short} == {1}
    assert toy.make_problems(0, seed=0) == []
    with pytest.raises(ValueError):
        toy.make_problems(5, seed=0, min_ops=3, max_ops=2)
    with pytest.raises(ValueError, match="unknown hash bucket"):
        toy.make_problems(5, seed=0, split="dev")
    first = toy.make_problems(3, seed=7)
    without = toy.make_problems(3, seed=7, exclude={first[0].question})
    assert [p.question for p in without[:2]] == [p.question for p in first[1:]]


def test_splits_disjoint_sizes_and_stable(train, test_split):
    assert len(train) == toy.SPLIT_SIZES["train"] == 2000
    assert len(test_split) == toy.SPLIT_SIZES["test"] == 500
    assert not {p.question for p in train} & {p.question for p in test_split}
    assert all(toy.split_of(p.question) == "train" for p in train)
    assert all(toy.split_of(p.question) == "test" for p in test_split)
    assert toy.load_toy("test", n=50) == test_split[:50]
    assert dataset_hash(toy.load_toy("train")) == dataset_hash(train)  # deterministic
    bigger_test = toy.load_toy("test", n=1500)  # disjointness holds for any size
    assert not {p.question for p in train} & {p.question for p in bigger_test}
    with pytest.raises(ValueError, match="unknown split"):
        toy.load_toy("validation")


def test_dev_split_is_held_out_from_train_and_test(train, test_split):
    dev = toy.load_toy("dev")
    assert len(dev) == toy.SPLIT_SIZES["dev"] == 500
    questions = {p.question for p in dev}
    assert len(questions) == 500
    assert not questions & {p.question for p in train}  # π_ref never trained on dev
    assert not questions & {p.question for p in test_split}
    assert all(toy.split_of(q) == "train" for q in questions)  # the train hash bucket
    assert toy.load_toy("dev", n=40) == dev[:40]
    assert [p.index for p in dev[:3]] == [0, 1, 2]


def test_gold_solutions_graded_correct_and_in_range(train, test_split):
    for p in train + test_split:
        assert p.answer == toy.gold_solution(p.question)
        assert is_correct(p.answer, p.gold, "strict")
        assert extract_answer(p.answer) == p.gold
        assert format_gold_solution(p.answer) == p.answer  # the GSM8K SFT target is unchanged
        assert toy.step_correctness(p.question, p.answer) == [True] * (p.answer.count("\n"))
        assert all(toy.line_correctness(p.question, p.answer))
        assert all(0 <= v <= toy.MAX_VALUE for v in toy.running_values(p.question))
        start, ops = toy.parse_question(p.question)
        assert 1 <= start <= 20
        for symbol, operand in ops:
            assert (2 <= operand <= 9) if symbol == "*" else (1 <= operand <= 20)
        assert set(toy.format_prompt(p.question) + p.answer) <= set(toy.ALPHABET)


# ----------------------------------------------------------------------------- checker


@pytest.mark.parametrize(
    ("response", "prefix", "local"),
    [
        (GOLD, [True, True, True], [True, True, True]),
        (GOLD + "\n", [True, True, True], [True, True, True]),
        (" 7 + 5 = 12 \n12 *2= 24\n24-3=21\n####21", [True, True, True], [True, True, True]),
        (SLIP_AT_2, [True, False, False], [True, False, True]),
        ("7+5=13\n13*2=26\n26-3=23\n#### 23", [False, False, False], [False, True, True]),
        # right arithmetic, wrong start / operand / operator
        ("8+5=13\n13*2=26\n26-3=23\n#### 23", [False, False, False], [False, True, True]),
        ("7+6=13\n13*2=26\n26-3=23\n#### 23", [False, False, False], [False, True, True]),
        ("7*5=35\n35*2=70\n70-3=67\n#### 67", [False, False, False], [False, True, True]),
        # back on the true value after a slip: prefix stays False, local flags the jump
        ("7+5=13\n12*2=24\n24-3=21\n#### 21", [False, False, False], [False, False, True]),
        # malformed lines
        ("7+5=12\n12 times 2 = 24\n24-3=21\n#### 21", [True, False, False], [True, False, False]),
        ("7+5=12\n12*2=\n24-3=21\n#### 21", [True, False, False], [True, False, False]),
        ("7+5=12\n\n12*2=24\n24-3=21\n#### 21", [True, False, False], [True, False, False]),
        ("7+5=12\n12*2=24\n24--3=27\n#### 27", [True, True, False], [True, True, False]),
        # missing lines
        ("7+5=12\n#### 12", [True, False, False], [True, False, False]),
        ("7+5=12", [True, False, False], [True, False, False]),
        ("#### 21", [False, False, False], [False, False, False]),
        ("", [False, False, False], [False, False, False]),
        # extra lines: after the last step they do not count as steps ...
        (GOLD + "\n21+1=22\n#### 22", [True, True, True], [True, True, True]),
        # ... but an extra line in between shifts everything
        ("7+5=12\n12+0=12\n12*2=24\n24-3=21\n#### 21", [True, False, False], [True, False, False]),
    ],
)
def test_step_correctness_examples(response, prefix, local):
    assert toy.step_correctness(Q, response) == prefix
    assert toy.step_correctness(Q, response, semantics="local") == local
    first = prefix.index(False) if False in prefix else None
    assert toy.first_error(Q, response) == first
    assert (local.index(False) if False in local else None) == first  # the semantics agree


def test_step_correctness_negative_values_and_bad_semantics():
    q = "2 +1 -5"  # not a generated question (goes negative), but the checker handles any integers
    assert toy.step_correctness(q, "2+1=3\n3-5=-2\n#### -2") == [True, True]
    assert toy.parse_step("-1-5=-6") == (-1, ("-", 5), -6)
    assert toy.parse_step("1-5=-4 extra") is None
    with pytest.raises(ValueError, match="semantics"):
        toy.step_correctness(Q, GOLD, semantics="strict")


def test_line_correctness_includes_answer_and_extra_lines():
    assert toy.line_correctness(Q, GOLD) == [True] * 4
    assert toy.line_correctness(Q, GOLD.replace("#### 21", "#### 20")) == [True] * 3 + [False]
    assert toy.line_correctness(Q, GOLD + "\n#### 21") == [True] * 4 + [False]
    assert toy.line_correctness(Q, "7+5=12\n12*2") == [True, False]  # an incomplete line
    assert toy.line_correctness(Q, "") == []


def test_exact_potentials():
    assert toy.exact_potentials(Q, GOLD) == [1.0, 1.0, 1.0]  # 3 completed lines
    assert toy.exact_potentials(Q, GOLD + "\n") == [1.0] * 4
    assert toy.exact_potentials(Q, SLIP_AT_2) == [1.0, 0.0, 0.0]
    assert toy.exact_potentials(Q, "7+5=13\n13*2=26\n") == [0.0, 0.0]
    assert toy.exact_potentials(Q, "7+5=12\n12*2=2") == [1.0]  # the open line does not count
    assert toy.exact_potentials(Q, GOLD.replace("#### 21", "#### 20") + "\n") == [1, 1, 1, 0]
    assert toy.exact_potentials(Q, "") == []
    assert toy.exact_potentials(Q, "\n") == [0.0]


@pytest.mark.parametrize("which", ["toy", "bpe"])
def test_exact_boundary_potentials(which):
    tokenizer = toy.toy_tokenizer() if which == "toy" else tiny_tokenizer()
    ids = tokenizer(SLIP_AT_2, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    pairs = toy.exact_boundary_potentials(tokenizer, Q, ids)
    assert [h for h, _ in pairs] == step_boundaries(tokenizer, ids)
    assert [phi for _, phi in pairs] == [1.0, 0.0, 0.0]
    if which == "toy":  # one token per character: boundaries right after each "\n"
        assert [h for h, _ in pairs] == [i + 1 for i, c in enumerate(SLIP_AT_2) if c == "\n"]
    # process rewards telescope to α (R − Φ(s_1)) with Φ(s_1) = 1
    reward = float(is_correct(SLIP_AT_2, "21"))
    shaped = process_rewards(len(ids), pairs, alpha=0.5, phi_start=1.0, phi_end=reward)
    assert sum(shaped) == pytest.approx(0.5 * (reward - 1.0))
    assert shaped[pairs[1][0] - 1] == pytest.approx(-0.5)  # the drop sits on the slipped line


# ----------------------------------------------------------------------------- demonstrations


def test_demonstration_error_rate_zero_is_gold_and_one_slips_first_step(train):
    rng = random.Random(0)
    assert all(toy.demonstration(p, 0.0, rng) == p.answer for p in train)
    for p in train[:500]:
        demo = toy.demonstration(p, 1.0, rng)
        n = len(toy.parse_question(p.question)[1])
        assert toy.step_correctness(p.question, demo) == [False] * n
        assert toy.step_correctness(p.question, demo, semantics="local") == [False] * n
        assert not is_correct(demo, p.gold)
    with pytest.raises(ValueError, match="error_rate"):
        toy.demonstration(train[0], 1.5, rng)


def test_demonstration_properties(train):
    rng = random.Random(123)
    rate, slips, steps = 0.3, 0, 0
    for p in train:
        demo = toy.demonstration(p, rate, rng)
        prefix = toy.step_correctness(p.question, demo)
        local = toy.step_correctness(p.question, demo, semantics="local")
        lines = demo.split("\n")
        assert len(lines) == len(prefix) + 1  # one line per step, then the answer line
        assert all(toy.parse_step(line) is not None for line in lines[:-1])
        values = [toy.parse_step(line)[2] for line in lines[:-1]]
        assert lines[-1] == f"#### {values[-1]}"  # the answer reports the (possibly wrong) chain
        assert all(0 <= v <= toy.MAX_VALUE for v in values)  # slips keep the chain in range
        assert is_correct(demo, p.gold) == all(prefix)  # final wrong iff some step wrong
        if not all(prefix):  # the first slip is where both semantics first fail
            assert local.index(False) == prefix.index(False)
            assert toy.first_error(p.question, demo) == prefix.index(False)
        slips += local.count(False)  # local semantics flags exactly the slips
        steps += len(local)
    assert steps > 5000
    assert abs(slips / steps - rate) < 0.03  # ~5 standard deviations


def test_has_carry():
    assert toy.has_carry(17, ("+", 8)) and toy.has_carry(5, ("+", 5))
    assert not toy.has_carry(12, ("+", 7)) and not toy.has_carry(20, ("+", 20))
    assert toy.has_carry(42, ("-", 17)) and not toy.has_carry(47, ("-", 12))
    assert not toy.has_carry(9, ("*", 9))


def test_systematic_carry_slips(train):
    rng = random.Random(7)
    # rate 1: every carry/borrow step drops it (and nothing else slips)
    for p in train[:300]:
        demo = toy.demonstration(p, 0.0, rng, carry_error_rate=1.0)
        _, ops = toy.parse_question(p.question)
        steps = [toy.parse_step(line) for line in demo.split("\n")[:-1]]
        for (a, op, c), expected_op in zip(steps, ops):
            assert op == expected_op
            exact = toy.apply_op(a, op)
            if not toy.has_carry(a, op):
                assert c == exact
            else:  # dropped carry / borrow (or, if that hit the true value, a random slip)
                assert c != exact
        assert is_correct(demo, p.gold) == all(toy.step_correctness(p.question, demo))
    # the frequency on carry steps is c + (1 - c) e, elsewhere e
    rate, carry_rate = 0.1, 0.6
    counts = {True: [0, 0], False: [0, 0]}
    for p in train:
        demo = toy.demonstration(p, rate, rng, carry_error_rate=carry_rate)
        _, ops = toy.parse_question(p.question)
        assert is_correct(demo, p.gold) == all(toy.step_correctness(p.question, demo))
        for line, op in zip(demo.split("\n"), ops):
            a, _, c = toy.parse_step(line)
            carry = toy.has_carry(a, op)
            counts[carry][0] += c != toy.apply_op(a, op)
            counts[carry][1] += 1
    assert abs(counts[True][0] / counts[True][1] - (carry_rate + (1 - carry_rate) * rate)) < 0.04
    assert abs(counts[False][0] / counts[False][1] - rate) < 0.03
    with pytest.raises(ValueError, match="carry_error_rate"):
        toy.demonstration(train[0], 0.1, rng, carry_error_rate=-0.1)
    corpus = toy.sft_corpus(train[:20], 0.0, seed=0, carry_error_rate=1.0)
    assert [r for _, r in corpus] != [p.answer for p in train[:20]]


def test_demonstration_deterministic_in_rng(train):
    a = [toy.demonstration(p, 0.5, random.Random(5)) for p in train[:50]]
    b = [toy.demonstration(p, 0.5, random.Random(5)) for p in train[:50]]
    assert a == b


def test_sft_corpus(train):
    problems = train[:40]
    corpus = toy.sft_corpus(problems, 0.2, seed=3, copies=2)
    assert len(corpus) == 80
    assert corpus == toy.sft_corpus(problems, 0.2, seed=3, copies=2)
    assert corpus != toy.sft_corpus(problems, 0.2, seed=4, copies=2)
    assert [prompt for prompt, _ in corpus] == [toy.format_prompt(p.question) for p in problems] * 2
    clean = toy.sft_corpus(problems, 0.0, seed=3)
    assert [response for _, response in clean] == [p.answer for p in problems]


# ----------------------------------------------------------------------------- prompt, tokenizer


def test_prompt_format(tok):
    assert toy.format_prompt(Q) == "Q: 7 +5 *2 -3\nA:\n"
    assert toy.format_prompt(Q, tok) == toy.format_prompt(Q)
    # the GSM8K code path renders the same prompt through the toy chat template
    assert gsm8k_format_prompt(Q, tok) == toy.format_prompt(Q)
    chat = tok.apply_chat_template(
        [{"role": "user", "content": Q}, {"role": "assistant", "content": GOLD}], tokenize=False
    )
    assert chat == toy.format_prompt(Q) + GOLD + "<eos>"


def test_tokenizer_vocabulary(tok):
    assert len(tok) == 23
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.bos_token is None and tok.padding_side == "left"
    assert tok.convert_ids_to_tokens(list(range(3, 23))) == list(toy.ALPHABET)
    assert tok("Q: 7", add_special_tokens=False)["input_ids"] == [22, 9, 4, 18]
    ids = tok("7+5=12\n", add_special_tokens=False)["input_ids"]
    assert len(ids) == 7 and ids[-1] == 3  # one token per character; "\n" is id 3
    assert tok("x7", add_special_tokens=False)["input_ids"][0] == tok.unk_token_id
    assert toy.toy_tokenizer("right").padding_side == "right"
    assert toy.toy_tokenizer().padding_side == "left"  # objects are independent


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=toy.ALPHABET, max_size=80))
def test_tokenizer_round_trip(text):
    tok = toy.toy_tokenizer()
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["input_ids"]) == len(text)
    assert enc["offset_mapping"] == [(i, i + 1) for i in range(len(text))]
    assert tok.decode(enc["input_ids"]) == text
    assert tok.decode(enc["input_ids"] + [tok.eos_token_id], skip_special_tokens=True) == text


def test_newline_detection_for_step_boundaries(tok):
    newline_ids = [t for t in range(len(tok)) if "\n" in tok.decode([t])]
    assert newline_ids == [3]
    ids = tok(GOLD, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert step_boundaries(tok, ids) == [i + 1 for i, c in enumerate(GOLD) if c == "\n"]


def test_action_mask_through_tokenize_example(tok, train):
    for p in train[:100]:
        prompt = toy.format_prompt(p.question)
        ex = tokenize_example(tok, prompt, p.answer, add_eos=True)
        assert ex["action_mask"] == [0] * len(prompt) + [1] * (len(p.answer) + 1)
        assert ex["terminal"] and not ex["straddles_boundary"]
        actions = [t for t, m in zip(ex["input_ids"], ex["action_mask"]) if m]
        assert tok.decode(actions, skip_special_tokens=True) == p.answer
    batch = DQOCollator(pad_token_id=tok.pad_token_id)(
        [tokenize_example(tok, toy.format_prompt(p.question), p.answer) for p in train[:4]]
    )
    assert batch["action_mask"].sum().item() == sum(len(p.answer) for p in train[:4])


def test_tokenizer_and_model_save_and_load_through_the_generic_loader(tok, tmp_path):
    """π_ref will be a checkpoint directory loaded by models.load_model_and_tokenizer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(toy.toy_model_config(tok, n_layers=1, hidden=32))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded_model, loaded = load_model_and_tokenizer(str(tmp_path), device="cpu", dtype="float32")
    assert len(loaded) == 23 and loaded.padding_side == "left"
    assert (loaded.pad_token_id, loaded.eos_token_id) == (0, 2)
    assert loaded.decode(loaded(GOLD + "\n")["input_ids"]) == GOLD + "\n"
    assert gsm8k_format_prompt(Q, loaded) == toy.format_prompt(Q)
    assert loaded_model.generation_config.pad_token_id == 0


# ----------------------------------------------------------------------------- model config


def test_toy_model_config_fits_the_task(tok, train):
    config = toy.toy_model_config(tok)
    assert config.vocab_size == 23 and config.num_hidden_layers == 4 and config.hidden_size == 128
    assert (config.pad_token_id, config.eos_token_id) == (0, 2)
    corpora = [
        toy.sft_corpus(train, 1.0, seed=0),
        toy.sft_corpus(train, 1.0, 0, carry_error_rate=1),
    ]
    longest = max(len(prompt) + len(response) + 1 for c in corpora for prompt, response in c)
    assert longest <= config.max_position_embeddings
    assert max(len(toy.format_prompt(p.question)) for p in train) + toy.MAX_NEW_TOKENS <= (
        config.max_position_embeddings
    )
    assert toy.toy_model_config(tok, n_layers=2, hidden=32).num_hidden_layers == 2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        assert sum(p.numel() for p in LlamaForCausalLM(config).parameters()) < 1_100_000
        model = LlamaForCausalLM(toy.toy_model_config(tok, n_layers=1, hidden=32)).eval()
    gens = generate(
        model,
        tok,
        [toy.format_prompt(p.question) for p in train[:2]],
        num_samples=2,
        max_new_tokens=8,
        seed=0,
    )
    assert len(gens) == 4 and all(len(g.response_ids) <= 8 for g in gens)
    assert all(len(g.behavior_logps) == len(g.response_ids) for g in gens)


def test_shipped_reference_model_is_a_half_right_reasoner():
    """The shipped π_ref ("toy"): greedy accuracy in 30–70 % on test problems, and every wrong
    greedy answer has an identifiable first wrong step (what process rewards need)."""
    from dqo_tutorial.gsm8k import is_correct
    from dqo_tutorial.models import load_model_and_tokenizer
    from dqo_tutorial.sampling import generate

    model, tok = load_model_and_tokenizer("toy", device="cpu")
    problems = toy.load_toy("test", 200)
    gens = generate(
        model,
        tok,
        [toy.format_prompt(p.question) for p in problems],
        num_samples=1,
        temperature=0.0,
        max_new_tokens=toy.MAX_NEW_TOKENS,
        batch_size=200,
    )
    correct = [is_correct(g.text, problems[g.prompt_index].gold) for g in gens]
    assert 0.3 <= sum(correct) / len(correct) <= 0.7, sum(correct) / len(correct)
    for g, ok in zip(gens, correct):
        if not ok:
            assert toy.first_error(problems[g.prompt_index].question, g.text) is not None, g.text


def test_slipped_solutions_first_go_wrong_at_their_step():
    for p in toy.load_toy("test", 20):
        slips = toy.slipped_solutions(p.question)
        n_ops = len(toy.parse_question(p.question)[1])
        assert list(slips) == [f"slip at step {k}" for k in range(1, n_ops + 1)]
        for k, response in enumerate(slips.values()):
            assert toy.first_error(p.question, response) == k  # checked by the step checker
            assert not is_correct(response, p.answer.split("#### ")[-1], "strict")


@pytest.mark.parametrize("n_ops", [2, 5, 8])
def test_chains_of_one_length_keep_the_split_rules(n_ops):
    from dqo_tutorial.tasks import get_task

    tok = toy.toy_tokenizer()
    task = get_task(f"toy-{n_ops}ops")
    train, dev, test = (task.load(split, None, None) for split in ("train", "dev", "test"))
    assert (len(train), len(dev), len(test)) == (2000, 500, 500)
    for problems in (train, dev, test):
        assert {len(toy.parse_question(p.question)[1]) for p in problems} == {n_ops}
    questions = [{p.question for p in ps} for ps in (train, dev, test)]
    assert not questions[0] & questions[1] and not questions[2] & (questions[0] | questions[1])
    assert all(toy.split_of(q) == "test" for q in questions[2])
    assert task.load("test", None, 7) == test[:7]  # prefix-stable
    # the budget holds every gold solution with its EOS, with room for slips
    longest = max(len(tok(p.answer)["input_ids"]) for p in train + test)
    assert longest + 1 <= task.max_new_tokens - 8
    assert toy.max_new_tokens_for(4) == toy.MAX_NEW_TOKENS
    with pytest.raises(ValueError, match="n_ops"):
        toy.load_chains("train", 1)


def test_the_mixed_length_reference_recipe_continues_the_shipped_model(tmp_path):
    """The horizon sweep's π_ref: the toy-ref recipe from the shipped model on 2–8 operations,
    RoPE positions stretched to 256 (two steps here)."""
    from dqo_tutorial.recipes import train_toy_reference

    summary = train_toy_reference(
        tmp_path, passes=1, ops=(2, 8), init="toy", max_positions=256, max_steps=2, progress=False
    )
    assert summary["steps"] == 2
    model, _ = load_model_and_tokenizer(str(tmp_path / "policy"), device="cpu")
    shipped, _ = load_model_and_tokenizer("toy", device="cpu")
    assert model.config.max_position_embeddings == 256
    moved = [
        (a - b).abs().max().item()
        for a, b in zip(model.parameters(), shipped.parameters(), strict=True)
    ]
    assert 0 < max(moved) < 0.1  # continued from the shipped weights, not a fresh model
