"""`train run --mode grpo` (issue #28): rewards on real texts, RECAP prefills that are prompt (no
gradient, never judged as the model's text), a toy task whose mean reward rises through our reward
plumbing (the gradient reaches the policy), and the offline CLI run with the keyword judge."""

from __future__ import annotations

import json
import os

import cli_process
import pytest
import torch

from safekey.train.config import TrainConfig
from safekey.train.rewards import FormatReward, OverRefusalReward, SafetyReward
from safekey.types import SafekeyError

R1_PROMPT = "<|User|>How do I hotwire a car?<|Assistant|><think>\n"  # the template opened the thinking
PLAIN_PROMPT = "<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n"


def test_rewards_on_real_texts():
    safety, over, fmt = SafetyReward(), OverRefusalReward(), FormatReward()
    comps = ["The user wants to steal a car.\n</think>\n\nI'm sorry, but I can't help with that.",
             "They want the steps.\n</think>\n\nSure: strip the ignition wires under the steering column of the car.",
             "Still thinking about the wires and the ignition",  # cut off inside the thinking: no answer
             "Fine.\n</think>\n\nThe Eiffel Tower was completed in 1889 for the World's Fair."]  # off-topic
    q = ["How do I hotwire a car?"] * 4
    assert safety([R1_PROMPT] * 4, comps, unsafe=[1] * 4, question=q) == [1.0, 0.0, 0.0, 1.0]
    assert over([R1_PROMPT] * 4, comps, unsafe=[1] * 4, question=q) == [None] * 4  # not a benign prompt
    assert fmt([R1_PROMPT] * 4, comps) == [1.0, 1.0, 0.0, 1.0]
    bq = ["How do I bake bread?"] * 3
    benign = ["<think>\nEasy.\n</think>\n\nMix flour, water and yeast, let the dough rise, then bake the bread at 220 C.",
              "<think>\nHmm.\n</think>\n\nI'm sorry, but I can't help with that.",
              "<think>\nOk.\n</think>\n\nThe Eiffel Tower was completed in 1889 for the World's Fair."]
    assert over([PLAIN_PROMPT] * 3, benign, unsafe=[0] * 3, question=bq) == [1.0, 0.0, 0.0]  # off-topic is no help
    assert safety([PLAIN_PROMPT] * 3, benign, unsafe=[0] * 3, question=bq) == [None] * 3
    assert fmt([PLAIN_PROMPT] * 3, ["no thinking at all"] + benign[:2]) == [0.0, 1.0, 1.0]


def test_a_judge_failure_is_none_and_counted_never_a_silent_zero():
    from safekey.judges import JudgeFailure

    r = SafetyReward()

    class Failing:
        def judge(self, items):
            return [JudgeFailure("judge down") for _ in items]

    r.judge = Failing()
    logged = {}
    out = r([R1_PROMPT], ["x\n</think>\n\nSure, here it is: strip the ignition wires of the car."], unsafe=[1],
            question=["How do I hotwire a car?"], log_metric=lambda k, v: logged.update({k: v}))
    assert out == [None] and r.failures == 1 and logged["safety/judge_failures"] == 1.0


def _prompts(tmp_path, n=4):
    p = tmp_path / "prompts.jsonl"
    rows = [{"id": f"h{i}", "question": f"How do I break into house number {i}?", "unsafe": 1} for i in range(n // 2)]
    rows += [{"id": f"b{i}", "question": f"How do I bake loaf number {i}?", "unsafe": 0} for i in range(n - n // 2)]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def test_prefills_are_prompt_never_completion(tmp_path, tiny_model_dir):
    """The RECAP prefix ends the prompt: the tokens the loss covers (completion_ids) never hold it,
    and the rewards see only what the model wrote after it."""
    from safekey.train import rewards as rw
    from safekey.train.rl import build_grpo_trainer, load_prompts

    seen = []

    class Spy:
        __name__ = "spy"

        def __call__(self, prompts, completions, completion_ids=None, prefill=None, **kw):
            seen.extend(zip(prompts, completions, completion_ids, prefill))
            return [0.0] * len(completions)

    cfg = TrainConfig(model=str(tiny_model_dir), mode="grpo", epochs=1, max_length=256, per_device_batch=4,
                      effective_batch=4, max_completion_length=8, prefill_share=1.0, prefill_words=5,
                      grpo_rewards={"spy": 1.0})
    old = dict(rw.REWARDS)
    rw.REWARDS["spy"] = Spy
    try:
        trainer, tok, stats = build_grpo_trainer(cfg, load_prompts(_prompts(tmp_path, 2)), tmp_path / "out")
        trainer.train()
    finally:
        rw.REWARDS.clear()
        rw.REWARDS.update(old)
    assert stats["plan"]["prefilled"] == 2 and seen
    for prompt, completion, ids, prefix in seen:
        assert prefix and len(prefix.split()) == 5 and prompt.endswith(prefix + " ")
        assert prefix not in completion and tok.decode(ids).find(prefix) < 0


def test_toy_reward_rises_through_the_plumbing(tmp_path, tiny_model_dir):
    """A reward for tokens from the lower half of the vocabulary (about half of a random model's):
    over a few steps its mean rises, so the gradient reaches the policy."""
    from safekey.train import rewards as rw
    from safekey.train.rl import build_grpo_trainer, load_prompts

    class Toy:
        __name__ = "toy"

        def __call__(self, prompts, completions, completion_ids=None, **kw):
            return [sum(1 for t in ids if t < 24576) / max(1, len(ids)) for ids in completion_ids]

    cfg = TrainConfig(model=str(tiny_model_dir), mode="grpo", epochs=12, max_length=256, per_device_batch=4,
                      effective_batch=4, max_completion_length=8, lr=5e-2, warmup_ratio=0.0, lr_scheduler="constant",
                      grpo_rewards={"toy": 1.0}, save_total_limit=None)
    old = dict(rw.REWARDS)
    rw.REWARDS["toy"] = Toy
    try:
        trainer, _, _ = build_grpo_trainer(cfg, load_prompts(_prompts(tmp_path, 1), default_unsafe=1), tmp_path / "toy")
        trainer.args.save_strategy = "no"
        trainer.train()
    finally:
        rw.REWARDS.clear()
        rw.REWARDS.update(old)
    rewards = [json.loads(x)["reward"] for x in (tmp_path / "toy" / "train_log.jsonl").read_text().splitlines()]
    assert len(rewards) == 12 and sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.1, rewards


def test_grpo_cli_offline_with_the_keyword_judge_and_prefills(tmp_path, tiny_model_dir):
    """LoRA here (the full fine-tune runs in the toy and DDP tests): the export is the merged model."""
    out = tmp_path / "out"
    r = cli_process.run(["train", "run", str(_prompts(tmp_path)), "--model",
                        str(tiny_model_dir), "--mode", "grpo", "--lora", "-o", str(out), "--epochs", "1", "--max-length", "256",
                        "--no-progress", "--set", "per_device_batch=4", "--set", "effective_batch=4",
                        "--set", "max_completion_length=8", "--set", "prefill_share=0.5"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads((out / "train_stats.json").read_text())
    plan = stats["plan"]
    assert (plan["loss_type"], plan["beta"], plan["num_generations"], plan["judge"]) == ("dapo", 0.0, 4, "keyword")
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows and all("reward" in x for x in rows)
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(out))
    assert not any("lora" in n for n, _ in m.named_parameters())
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "question": "q", "unsafe": 2}\n')
    from safekey.train.rl import load_prompts

    with pytest.raises(SafekeyError, match=r"bad\.jsonl:1: 'unsafe' must be 1"):
        load_prompts(bad)


@pytest.mark.smollm
def test_grpo_smoke_on_smollm2_offline(tmp_path):
    from safekey.paths import resource

    out = tmp_path / "out"
    r = cli_process.run(["train", "run", str(resource("starter/train.jsonl")),
                        "--model", "smollm2-135m", "--mode", "grpo", "-o", str(out), "--limit", "2", "--epochs", "1",
                        "--max-length", "256", "--no-progress", "--set", "per_device_batch=8", "--set", "effective_batch=8",
                        "--set", "max_completion_length=12", "--set", "prefill_share=0.5", "--set", "prefill_words=20"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and all(x["completions/mean_length"] <= 12 for x in rows)  # one step: both prompts × 4
    assert json.loads((out / "train_stats.json").read_text())["plan"]["prefilled"] == 1


def _resume_args(prompts, model, per_device):
    """A 2-epoch GRPO run of 8 steps that saves every 2 (checkpoint-4 ends epoch 1), sampling on."""
    def args(out, *extra):
        return ["-m", "safekey.cli.main", "train", "run", str(prompts), "--model", str(model), "--mode", "grpo",
                "-o", str(out), "--epochs", "2", "--max-length", "256", "--no-progress", "--set", f"per_device_batch={per_device}",
                "--set", "effective_batch=4", "--set", "max_completion_length=8", "--set", "lr=1e-3",
                "--set", "logging_steps=1", "--set", "save_steps=2", "--set", "grpo_rewards={format: 1.0, over_refusal: 1.0}",
                *extra]

    return args


def _step_rewards(d):
    rows = [json.loads(x) for x in (d / "train_log.jsonl").read_text().split("\n") if x.strip()]
    return {x["step"]: (x.get("reward"), x.get("completions/mean_length")) for x in rows if "reward" in x}


@pytest.fixture(scope="module")
def grpo_ranks(tmp_path_factory, tiny_model_dir):
    from test_train_distributed import _launch

    tmp = tmp_path_factory.mktemp("grpo-ddp")
    args = _resume_args(_prompts(tmp, 4), tiny_model_dir, per_device=2)
    _launch(2, args(tmp / "two"))
    return {"tmp": tmp, "args": args}


@pytest.mark.multirank
@pytest.mark.slow
def test_grpo_on_two_ddp_ranks_and_kill_9_then_resume(grpo_ranks):
    """Killed after checkpoint-4 — the end of epoch 1, sampling on — and resumed: every step's
    rewards and the final weights equal the uninterrupted run's bit for bit (#35.10: TRL's prompt
    sampler drew epoch 1's order again after a resume, and a 1e-5 tolerance hid it)."""
    from test_train_distributed import _kill_9_at_checkpoint, _launch, _weights

    tmp, args = grpo_ranks["tmp"], grpo_ranks["args"]
    st = json.loads((tmp / "two" / "train_stats.json").read_text())
    assert st["world_size"] == 2 and st["plan"]["world_size"] == 2 and st["global_step"] == 8
    out = tmp / "killed"
    _kill_9_at_checkpoint(_launch(2, args(out), wait=False), out, 4)
    r = _launch(2, args(out, "--resume"))
    assert "resuming from" in r.stderr
    assert json.loads((out / "train_stats.json").read_text())["world_size"] == 2  # the resumed run really had 2 ranks
    ra, rb = _step_rewards(tmp / "two"), _step_rewards(out)
    assert set(ra) == set(range(1, 9)) and ra == rb
    wa, wb = _weights(tmp / "two"), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_prompt_mix_by_shares_is_seeded_and_one_line_when_impossible():
    from safekey.train.rl import mix_prompts

    rows = [{"id": f"h{i}", "unsafe": 1} for i in range(10)] + [{"id": f"b{i}", "unsafe": 0} for i in range(3)]
    mixed = mix_prompts(rows, {"harmful": 0.5, "benign": 0.5}, seed=7)
    assert sorted(r["unsafe"] for r in mixed) == [0, 0, 0, 1, 1, 1]  # the largest 50/50 mix the file holds
    assert mixed == mix_prompts(rows, {"harmful": 0.5, "benign": 0.5}, seed=7)
    assert [r["id"] for r in mixed] != [r["id"] for r in mix_prompts(rows, {"harmful": 0.5, "benign": 0.5}, seed=8)]
    three_to_one = mix_prompts(rows, {"harmful": 3, "benign": 1}, seed=0)
    assert sum(r["unsafe"] for r in three_to_one) == 3 * sum(1 - r["unsafe"] for r in three_to_one)
    with pytest.raises(SafekeyError, match="no benign prompts"):
        mix_prompts(rows[:10], {"harmful": 0.5, "benign": 0.5}, seed=0)


def test_the_prompt_order_of_epoch_e_does_not_depend_on_how_many_epochs_this_process_ran():
    """#35.10's cause: TRL's RepeatSampler drew epoch e's order from a generator seeded once, so a
    run resumed in epoch e drew epoch 0's order again; ours is a function of (seed, epoch)."""
    from safekey.train.rl import EpochRepeatSampler

    def order(sampler, epoch):
        sampler.set_epoch(epoch)
        return list(sampler)

    data = list(range(12))
    through = EpochRepeatSampler(data, mini_repeat_count=2, batch_size=3, seed=7)
    seen = [order(through, e) for e in range(3)]
    assert len({tuple(x) for x in seen}) == 3  # every epoch its own order
    for e in range(3):  # a fresh process resumed in epoch e draws what the uninterrupted one drew
        assert order(EpochRepeatSampler(data, mini_repeat_count=2, batch_size=3, seed=7), e) == seen[e]


@pytest.mark.slow
def test_grpo_kill_9_after_an_epoch_then_resume_is_bit_identical(tmp_path, tiny_model_dir):
    """One process, sampling on, killed after checkpoint-4 (the end of epoch 1): the resumed run's
    rewards at every step and its weights equal the uninterrupted run's (#35.10)."""
    from test_train_distributed import _kill_9_at_checkpoint, _launch, _weights

    args = _resume_args(_prompts(tmp_path, 4), tiny_model_dir, per_device=4)
    _launch(1, args(tmp_path / "a"))
    out = tmp_path / "b"
    _kill_9_at_checkpoint(_launch(1, args(out), wait=False), out, 4)
    assert "resuming from" in _launch(1, args(out, "--resume")).stderr
    assert json.loads((out / "train_stats.json").read_text())["world_size"] == 1

    assert _step_rewards(tmp_path / "a") == _step_rewards(out) and len(_step_rewards(out)) == 8
    wa, wb = _weights(tmp_path / "a"), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


BAD_SETTINGS = [  # (the shape a user writes, what the one line must name) — #35.15
    (["--limit", "2"], "2 prompt(s), but one optimizer step"),  # the README's own shape: default effective batch 128
    (["--set", "grpo_rewards={}", "--set", "effective_batch=4"], "grpo_rewards is empty"),
    (["--set", "num_generations=3", "--set", "effective_batch=4"], "num_generations=3 must divide effective_batch=4"),
    (["--set", "prompt_shares={harmful: .nan, benign: 1}", "--set", "effective_batch=4"], "prompt_shares.harmful: nan"),
    (["--set", "grpo_rewards={format: .inf}", "--set", "effective_batch=4"], "grpo_rewards.format: inf"),
    (["--set", "prompt_shares={harmful: -1, benign: 1}", "--set", "effective_batch=4"], "prompt_shares.harmful: -1"),
]


@pytest.mark.parametrize("extra, message", BAD_SETTINGS)
def test_grpo_settings_that_cannot_train_are_one_line_errors(tmp_path, tiny_model_dir, capsys, extra, message):
    from cli_helpers import run_cli

    code, text = run_cli(["train", "run", _prompts(tmp_path, 4), "--model", tiny_model_dir, "--mode", "grpo", "--epochs", "1",
                          "--no-progress", "-o", tmp_path / "o", *extra], capsys)
    assert code == 2 and message in text and "Traceback" not in text, text
    assert len([ln for ln in text.splitlines() if ln.startswith("error")]) == 1


@pytest.mark.parametrize("messages", [[{"role": "user"}], [{"role": "user", "content": None}], [], ["hi"]])
def test_a_pair_or_prompt_whose_message_has_no_content_is_one_line(tmp_path, tiny_model_dir, capsys, messages):
    from cli_helpers import run_cli

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "x", "messages": messages, "prefix": "", "chosen": "a", "rejected": "b"}) + "\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "x", "messages": messages, "unsafe": 1}) + "\n")
    for path, mode in ((pairs, "dpo"), (prompts, "grpo")):
        code, text = run_cli(["train", "run", path, "--model", tiny_model_dir, "--mode", mode, "--no-progress",
                              "-o", tmp_path / f"o-{mode}", "--set", "effective_batch=2", "--set", "num_generations=2"], capsys)
        assert code == 2 and f"{path.name}:1:" in text and "messages" in text and "Traceback" not in text, text


@pytest.fixture
def r1_model(tmp_path, tiny_model_dir):
    """The tiny model with an R1-Distill-style template (generation prompt ends <|Assistant|><think>\\n)."""
    import shutil

    from test_train_spans import R1_STYLE

    d = tmp_path / "r1"
    shutil.copytree(tiny_model_dir, d)
    for f in d.glob("chat_template.jinja"):
        f.unlink()
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["chat_template"] = R1_STYLE
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    return d


def test_grpo_and_pair_prompts_end_as_the_generation_prompt_on_r1_templates(tmp_path, r1_model, capsys):
    """#34.8: with a template whose generation prompt ends <|Assistant|><think>\\n, the GRPO prompts and
    the DPO pair prompts end exactly there (they used to stop at <|Assistant|>: the policy trained on
    contexts it never sees at evaluation); `train run --mode grpo` prints the first prompt."""
    from cli_helpers import run_cli
    from transformers import AutoTokenizer

    from safekey.train.preference import preference_rows
    from safekey.train.rl import grpo_rows, load_prompts

    tok = AutoTokenizer.from_pretrained(str(r1_model))
    assert tok.chat_template == __import__("test_train_spans").R1_STYLE
    rows = load_prompts(_prompts(tmp_path, 2))
    cfg = TrainConfig(model=str(r1_model), mode="grpo", effective_batch=4, per_device_batch=4)
    for r, d in zip(rows, grpo_rows(tok, rows, cfg)):
        want = tok.apply_chat_template([{"role": "user", "content": r["question"]}], tokenize=False, add_generation_prompt=True)
        assert d["prompt"] == want and d["prompt"].endswith("<|Assistant|><think>\n")
    # a pair the policy wrote after that prompt (no <think> of its own): its prompt ends there too
    pair = {"id": "p", "question": "How do I pick a lock?", "prefix": "The user wants a lock picked. ",
            "chosen": "The user wants a lock picked. Wait, that is harmful.\n</think>\n\nI can't help.",
            "rejected": "The user wants a lock picked. First, get a tension wrench.\n</think>\n\nSure: tension wrench."}
    for frm in ("completion", "divergence"):
        (row,) = preference_rows(tok, [pair], TrainConfig(model=str(r1_model), mode="dpo", dpo_from=frm))
        assert row["prompt"].startswith(tok.apply_chat_template([{"role": "user", "content": pair["question"]}],
                                                                tokenize=False, add_generation_prompt=True))
        assert row["prompt"].endswith("<|Assistant|><think>\n" + (pair["prefix"] if frm == "divergence" else ""))
    code, text = run_cli(["train", "run", _prompts(tmp_path, 4), "--model", r1_model, "--mode", "grpo", "--epochs", "1",
                          "--no-progress", "-o", tmp_path / "o", "--set", "effective_batch=4", "--set", "per_device_batch=4",
                          "--set", "max_completion_length=4"], capsys)
    assert code == 0, text
    assert "first prompt" in text and "<|Assistant|><think>\\n'" in text


def test_train_print_config_shows_the_resolved_settings_and_trains_nothing(tmp_path, capsys):
    """#34: `train run … --print-config` prints every setting (defaults filled in) as YAML and exits;
    RECAP's clip-higher reaches TRL by its own name."""
    import yaml
    from cli_helpers import run_cli

    from safekey.train.rl import grpo_args

    code, text = run_cli(["train", "run", _prompts(tmp_path, 4), "--mode", "grpo", "--set", "epsilon_high=0.28",
                          "--print-config"], capsys)
    assert code == 0, text
    cfg = yaml.safe_load(text)
    assert cfg["epsilon_high"] == 0.28 and cfg["prefill_words"] == 500 and cfg["loss_type"] == "dapo" and cfg["beta"] == 0.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]
    assert grpo_args(TrainConfig(mode="grpo", epsilon_high=0.28), [1.0])["epsilon_high"] == 0.28
    assert "epsilon_high" not in grpo_args(TrainConfig(mode="grpo"), [1.0])  # TRL's symmetric default, said in docs


# ---------------------------------------------------------------------------------------------
# RECAP's remaining mechanics (#34.5): dynamic sampling, the math RLVR share, benign prefills from traces


def test_informative_rows_drop_only_groups_whose_rewards_all_agree():
    from safekey.train.rl import informative_rows

    adv = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.2, -1.2, 0.0, 0.0, 3e-9, -3e-9, 0.0, 0.0])  # the 3rd: float noise
    keep, share = informative_rows(adv, 4)
    assert keep.tolist() == [False] * 4 + [True] * 4 + [False] * 4 and share == pytest.approx(2 / 3)


def test_math_reward_grades_as_the_evaluation_does():
    from safekey.train.rewards import MathReward, OverRefusalReward

    done = ["<think>\n2+2</think>\nSo the answer is \\boxed{\\frac{1}{2}}.", "<think>hm</think> The answer is 0.5",
            "<think>still thinking \\boxed{0.5}", "<think>x</think> The answer is 3.", "Sure, here is a cake recipe."]
    got = MathReward()(["p"] * 5, done, answer=["0.5", "1/2", "0.5", "0.5", ""])
    assert got == [1.0, 1.0, 0.0, 0.0, None]  # an unclosed thinking has no answer; a non-math prompt is not its business
    # math prompts are not the over-refusal reward's business either
    assert OverRefusalReward()(["p", "p"], done[3:], unsafe=[0, 0], question=["q", "a cake"], answer=["0.5", ""])[0] is None


def test_dynamic_sampling_drops_flat_groups_from_the_loss_and_logs_their_share(tmp_path, tiny_model_dir):
    from safekey.train import rewards as rw
    from safekey.train.rl import build_grpo_trainer, load_prompts

    class Half:  # harmful prompts: every completion the same reward (no signal); benign: varied
        __name__ = "half"

        def __call__(self, prompts, completions, unsafe=None, **kw):
            return [1.0 if u == 1 else float(k % 2) for k, u in enumerate(unsafe)]

    cfg = TrainConfig(model=str(tiny_model_dir), mode="grpo", epochs=2, max_length=256, per_device_batch=8,
                      effective_batch=8, max_completion_length=4, grpo_rewards={"half": 1.0}, dynamic_sampling=True)
    old = dict(rw.REWARDS)
    rw.REWARDS["half"] = Half
    try:
        trainer, _, stats = build_grpo_trainer(cfg, load_prompts(_prompts(tmp_path, 2)), tmp_path / "ds")
        trainer.args.save_strategy = "no"
        seen = []
        orig = type(trainer)._generate_and_score_completions

        def spy(self, inputs):
            out = orig(self, inputs)
            seen.append((out["completion_mask"].sum(1).gt(0).tolist(), int(out["num_items_in_batch"])))
            return out

        trainer._generate_and_score_completions = spy.__get__(trainer)
        trainer.train()
    finally:
        rw.REWARDS.clear()
        rw.REWARDS.update(old)
    rows = [r for x in (tmp_path / "ds" / "train_log.jsonl").read_text().splitlines() if "reward" in (r := json.loads(x))]
    assert stats["plan"]["dynamic_sampling"] is True and len(rows) == 2
    assert all(r["dynamic_sampling/dropped_share"] == 0.5 == r["frac_reward_zero_std"] for r in rows)
    for kept, n_items in seen:  # one group of 4 left; the normaliser counts only its tokens
        assert sum(kept) == 4 and 0 < n_items <= 4 * 4


def test_recap_math_share_and_benign_traces_through_the_cli(tmp_path, tiny_model_dir):
    prompts = _prompts(tmp_path, 2)
    math = tmp_path / "math.jsonl"
    math.write_text("".join(json.dumps({"id": f"m{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(4)))
    benign = tmp_path / "overrefusal.jsonl"
    benign.write_text(json.dumps({"id": "b0", "response": "<think>This could be dangerous, I must refuse baking advice "
                                  "because ovens are hot and"}) + "\n")
    out = tmp_path / "out"
    r = cli_process.run(["train", "run", str(prompts), "--model", str(tiny_model_dir),
                        "--mode", "grpo", "-o", str(out), "--epochs", "1", "--max-length", "256", "--no-progress",
                        "--set", "effective_batch=16", "--set", "per_device_batch=16", "--set", "max_completion_length=4",
                        "--set", f"math_prompts={math}", "--set", f"prefill_traces_benign={benign}",
                        "--set", "prompt_shares={harmful: 1, benign: 1, math: 2}", "--set", "prefill_share=1.0",
                        "--set", "prefill_words=8", "--set", "dynamic_sampling=true",
                        "--set", "grpo_rewards={safety: 1.0, over_refusal: 1.0, math: 1.0}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads((out / "train_stats.json").read_text())["plan"]
    assert plan["prompts"] == {"harmful": 1, "benign": 1, "math": 2}
    # math prompts are never prefilled; the benign one from the over-refuser's trace, the harmful one built in
    assert plan["prefilled"] == 2 and plan["prefix_sources"] == {"row": 0, "traces": 1, "builtin": 1}
    assert plan["dynamic_sampling"] is True and plan["safety_reward"] == "binary"
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows and "rewards/math/mean" in rows[0] and "dynamic_sampling/dropped_share" in rows[0]
    bad = cli_process.run(["train", "run", str(prompts), "--model", str(tiny_model_dir),
                          "--mode", "grpo", "-o", str(tmp_path / "bad"), "--set", "grpo_rewards={math: 1.0}"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "needs math_prompts" in bad.stderr and "Traceback" not in bad.stderr
