"""VLA graphs and runner: cached decoding equals full recomputation, padded caches change
nothing, per-sample lengths in one batch, seeded sampling, the planner and its input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from planner.config import ConfigError
from planner.model import batch as B
from planner.model.lm import causal_mask
from planner.planners.vla import VLAPlanner, limit_rising_jerk
from planner.runner import Runner, RunOptions, TorchBackend
from planner.types import EGO_ACCEL, InvalidInputError, Trajectory
from tests.planner.model.tiny import planner_input, tiny_config, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def parts():
    torch.set_num_threads(1)
    cfg = tiny_config()
    tok = tiny_tokenizer(cfg)
    return cfg, tok, tiny_model(cfg, tok)


def _prompt_tensors(cfg, inp):
    arrays = B.prompt_arrays(inp, cfg)
    return {k: torch.from_numpy(np.asarray(v))[None] for k, v in arrays.items()}


def _cached_logits(model, cfg, prompt, text_ids):
    """Prefill, then one decode step per text token: logits (L, V)."""
    p, s = cfg.prompt_tokens, cfg.lm.max_seq_len
    k, v = model.lm.empty_cache(1)
    vision = model.encode_vision(prompt[B.CAMERAS])
    slots = torch.arange(s)
    mask = (slots[None, :] <= torch.arange(p)[:, None])[None]
    _, k, v = model.prefill(
        vision,
        prompt[B.EGO_HISTORY],
        prompt[B.ROUTE],
        prompt[B.COMMAND],
        prompt[B.SPEED_LIMIT],
        k,
        v,
        mask,
        torch.arange(p)[None],
    )
    out = []
    for j, token in enumerate(text_ids):
        pos = p + j
        logits, k, v = model.decode_step(
            torch.tensor([[token]]), k, v, (slots <= pos)[None, None], torch.tensor([[pos]])
        )
        out.append(logits[0, 0])
    return torch.stack(out), k, v


@torch.no_grad()
def test_cached_decoding_equals_full_recomputation(parts) -> None:
    cfg, tok, model = parts
    prompt = _prompt_tensors(cfg, planner_input(cfg))
    text = [tok.cot_id, *tok.encode("Keep the lane on the clear road."), tok.end_cot_id]
    cached, _, _ = _cached_logits(model, cfg, prompt, text)
    vision = model.encode_vision(prompt[B.CAMERAS])
    x = model.prompt_embeddings(
        vision, prompt[B.EGO_HISTORY], prompt[B.ROUTE], prompt[B.COMMAND], prompt[B.SPEED_LIMIT]
    )
    x = torch.cat([x, model.lm.embed(torch.tensor([text]))], dim=1)
    positions = torch.arange(x.shape[1])[None]
    hidden, _, _ = model.lm.run(x, positions, causal_mask(positions))
    full = model.lm.head(hidden[0, cfg.prompt_tokens :])
    assert torch.allclose(cached, full, atol=1e-5), (cached - full).abs().max()


@torch.no_grad()
@pytest.mark.parametrize("reasoning", ["Keep the lane on the clear road.", None])
def test_action_log_prob_equals_full_recomputation(parts, reasoning) -> None:
    """Runner.action_log_prob (one cached decode step) equals the log-softmax of a full
    forward over prompt + text + trajectory tokens, token by token."""
    cfg, tok, model = parts
    inp = planner_input(cfg)
    controls = np.stack([np.linspace(-1.0, 1.0, 64), np.full(64, 0.01)], axis=1)
    result = Runner(TorchBackend(model), cfg, tok).action_log_prob(
        B.prompt_arrays(inp, cfg), controls, reasoning
    )
    norm = B.normalize_controls(controls, cfg.normalization)
    traj = B.trajectory_token_ids(norm, cfg.trajectory_tokens, tok)
    head = (
        [tok.traj_id]
        if reasoning is None
        else [tok.cot_id, *tok.encode(reasoning), tok.end_cot_id, tok.traj_id]
    )
    prompt = _prompt_tensors(cfg, inp)
    vision = model.encode_vision(prompt[B.CAMERAS])
    x = model.prompt_embeddings(
        vision, prompt[B.EGO_HISTORY], prompt[B.ROUTE], prompt[B.COMMAND], prompt[B.SPEED_LIMIT]
    )
    x = torch.cat([x, model.lm.embed(torch.tensor([[*head, *traj.tolist()]]))], dim=1)
    positions = torch.arange(x.shape[1])[None]
    hidden, _, _ = model.lm.run(x, positions, causal_mask(positions))
    first = cfg.prompt_tokens + len(head) - 1  # hidden here predicts the first bin
    logp = torch.log_softmax(model.lm.head(hidden[0, first : first + len(traj)]).double(), -1)
    want = logp[torch.arange(len(traj)), torch.from_numpy(traj)].numpy()
    np.testing.assert_allclose(result.token_logprobs, want, atol=1e-4)
    assert result.token_logprobs.shape == (2 * cfg.trajectory_tokens.chunks,)
    assert result.total == pytest.approx(float(want.sum()), abs=1e-3)
    assert result.bins.shape == (cfg.trajectory_tokens.chunks, 2)


@torch.no_grad()
def test_padded_cache_equals_unpadded(parts) -> None:
    cfg, tok, model = parts
    text = [tok.cot_id, *tok.encode("Come to a stop."), tok.end_cot_id, tok.traj_id]
    exact_len = cfg.prompt_tokens + len(text)
    exact_cfg = tiny_config(
        f"lm.max_seq_len={exact_len}",
        "lm.max_reasoning_tokens=4",
        "inference.max_reasoning_tokens=4",
    )
    exact = tiny_model(exact_cfg, tok)
    exact.load_state_dict(model.state_dict())  # the cache length is not a weight
    prompt = _prompt_tensors(cfg, planner_input(cfg))
    outputs = []
    for m, c in ((model, cfg), (exact, exact_cfg)):
        logits, k, v = _cached_logits(m, c, prompt, text)
        ctx = torch.arange(c.lm.max_seq_len)[None] < exact_len
        x_t = torch.linspace(-1, 1, 16 * 8).reshape(1, 16, 8)
        vel = m.denoise_step(x_t, torch.tensor([0.3]), k, v, ctx, torch.tensor([exact_len]))
        outputs.append((logits, vel))
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-5)


def test_k_samples_match_single_sample_and_fast_mode(parts) -> None:
    cfg, tok, model = parts
    runner = Runner(TorchBackend(model), cfg, tok)
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    one = runner.run(
        prompt, RunOptions(samples=1, max_reasoning_tokens=6), np.random.default_rng(0)
    )
    three = runner.run(
        prompt, RunOptions(samples=3, max_reasoning_tokens=6), np.random.default_rng(0)
    )
    # greedy reasoning is identical for every sample; noise differs per sample
    assert three.reasoning_ids == [one.reasoning_ids[0]] * 3
    assert np.allclose(three.controls[0], one.controls[0], atol=1e-4)
    assert not np.allclose(three.controls[0], three.controls[1])
    fast = runner.run(prompt, RunOptions(mode="fast"), np.random.default_rng(0))
    assert fast.reasoning == [""] and fast.controls.shape == (1, 64, 2)
    explain = runner.run(
        prompt, RunOptions(mode="explain", max_reasoning_tokens=3), np.random.default_rng(0)
    )
    assert explain.controls is None and len(explain.reasoning_ids[0]) <= 3


def test_per_sample_lengths_in_one_batch(parts) -> None:
    """Samples that stop reasoning at different lengths each keep exactly their own text in
    the batch cache: it equals the cache of that sample decoded alone (per-sample masks and
    positions)."""
    cfg, tok, model = parts
    runner = Runner(TorchBackend(model), cfg, tok)
    inp = planner_input(cfg)
    prompt = B.prompt_arrays(inp, cfg)
    opts = RunOptions(
        samples=4, decoding="top_p", top_p=1.0, temperature=3.0, max_reasoning_tokens=8
    )
    batch = runner.run(prompt, opts, np.random.default_rng(3))
    assert len({len(ids) for ids in batch.reasoning_ids}) > 1, "seed gives equal lengths"
    for b, ids in enumerate(batch.reasoning_ids):
        text = [tok.cot_id, *ids, tok.end_cot_id, tok.traj_id]
        with torch.no_grad():
            _, k, _ = _cached_logits(model, cfg, _prompt_tensors(cfg, inp), text)
        n = cfg.prompt_tokens + len(text)
        assert batch.context_mask[b].sum() == n and batch.context_mask[b, :n].all()
        assert np.allclose(batch.k_cache[:, b, :, :n], k.numpy()[:, 0, :, :n], atol=1e-5)


def test_seeded_sampling_is_reproducible(parts) -> None:
    cfg, tok, model = parts
    runner = Runner(TorchBackend(model), cfg, tok)
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    opts = RunOptions(
        samples=2, decoding="top_p", top_p=0.95, temperature=2.0, max_reasoning_tokens=6
    )
    a = runner.run(prompt, opts, np.random.default_rng(7))
    b = runner.run(prompt, opts, np.random.default_rng(7))
    c = runner.run(prompt, opts, np.random.default_rng(8))
    assert a.reasoning_ids == b.reasoning_ids and np.array_equal(a.controls, b.controls)
    assert not np.array_equal(a.controls, c.controls)


def test_planner_returns_trajectory_reasoning_and_timings(parts) -> None:
    cfg, tok, model = parts
    planner = VLAPlanner(TorchBackend(model), cfg, tok, max_reasoning_tokens=5)
    out = planner.plan(planner_input(cfg))
    assert isinstance(out.trajectory, Trajectory) and len(out.trajectory) == 64
    assert out.reasoning is not None and isinstance(out.reasoning.text, str)
    assert {"vision", "prefill", "decode", "denoise"} <= set(out.timings_ms)
    assert all(v >= 0 for v in out.timings_ms.values())
    planner.reset()
    again = planner.plan(planner_input(cfg))
    assert np.array_equal(out.trajectory.data, again.trajectory.data)  # reset restarts the seed
    k_planner = VLAPlanner(TorchBackend(model), cfg, tok, samples=3, max_reasoning_tokens=2)
    k_planner.plan(planner_input(cfg))
    assert len(k_planner.last_trajectories) == 3
    fast = VLAPlanner(TorchBackend(model), cfg, tok, mode="fast").plan(planner_input(cfg))
    assert fast.reasoning is None and "denoise" in fast.timings_ms


def test_noise_scale_zero_gives_the_deterministic_plan(parts) -> None:
    """noise_scale=0 integrates from the noise's mode: the plan no longer depends on the
    seed, and equals the run with an all-zero initial noise; values outside [0, 1] fail."""
    cfg, tok, model = parts
    runner = Runner(TorchBackend(model), cfg, tok)
    prompt = B.prompt_arrays(planner_input(cfg), cfg)
    det = [
        runner.run(prompt, RunOptions(mode="fast", noise_scale=0.0), np.random.default_rng(s))
        for s in (0, 1)
    ]
    assert np.array_equal(det[0].controls, det[1].controls)
    draws = [
        runner.run(prompt, RunOptions(mode="fast"), np.random.default_rng(s)).controls
        for s in (0, 1)
    ]
    assert not np.allclose(draws[0], draws[1])

    class ZeroNoise:  # an rng whose normal draws are all zero
        def standard_normal(self, shape):
            return np.zeros(shape)

    zero = runner.run(prompt, RunOptions(mode="fast"), ZeroNoise()).controls
    np.testing.assert_allclose(det[0].controls, zero, atol=1e-6)
    planner = VLAPlanner(TorchBackend(model), cfg, tok, mode="fast", noise_scale=0.0)
    assert planner.options.noise_scale == 0.0
    with pytest.raises(Exception, match="noise_scale"):
        RunOptions(noise_scale=1.5).check(cfg)
    with pytest.raises(Exception, match="noise_scale"):
        tiny_config("inference.noise_scale=-1")


def test_mean_plan_is_the_mean_of_the_k_samples(parts) -> None:
    """plan="mean": the plan integrates the mean of the k samples' controls (same draws as
    plan="first", whose plan is the first sample); an unknown choice is refused."""
    cfg, tok, model = parts
    first = VLAPlanner(TorchBackend(model), cfg, tok, samples=4, max_reasoning_tokens=2)
    mean = VLAPlanner(TorchBackend(model), cfg, tok, samples=4, max_reasoning_tokens=2, plan="mean")
    out_first, out_mean = first.plan(planner_input(cfg)), mean.plan(planner_input(cfg))
    controls = mean.last_result.controls
    assert np.allclose(controls, first.last_result.controls)
    want = Trajectory.from_controls(controls.mean(axis=0)[:, 0], controls.mean(axis=0)[:, 1], 8.0)
    assert np.allclose(out_mean.trajectory.xy, want.xy)
    assert np.allclose(out_first.trajectory.xy, first.last_trajectories[0].xy)
    assert not np.allclose(out_mean.trajectory.xy, out_first.trajectory.xy)
    with pytest.raises(Exception, match="first or mean"):
        VLAPlanner(TorchBackend(model), cfg, tok, plan="median")
    with pytest.raises(Exception, match="first or mean"):
        tiny_config("inference.plan=median")


def test_limit_rising_jerk_limits_rises_only() -> None:
    a = np.array([[2.0, 2.0, -4.0, -4.0, 1.0, 1.0], [0.0, 0.5, 0.5, 0.4, 3.0, 3.0]])
    out = limit_rising_jerk(a, a0=-1.0, max_jerk_mps3=5.0, dt=0.1)  # rises of 0.5 per step
    np.testing.assert_allclose(out[0], [-0.5, 0.0, -4.0, -4.0, -3.5, -3.0])
    np.testing.assert_allclose(out[1], [-0.5, 0.0, 0.5, 0.4, 0.9, 1.4])
    assert (out <= a + 1e-12).all()  # never faster than the model's plan; braking as planned
    assert np.array_equal(limit_rising_jerk(a, a0=5.0, max_jerk_mps3=5.0, dt=0.1)[:, :1], a[:, :1])


def test_planner_max_jerk_up_limits_the_plan(parts) -> None:
    """inference.max_jerk_up_mps3 (or the planner option): the plan's acceleration rises by at
    most max_jerk * dt per step from the ego's current acceleration, never exceeds the
    model's; 0 keeps the model's plan; a negative limit is refused."""
    cfg, tok, model = parts
    inp = planner_input(cfg)
    plain = VLAPlanner(TorchBackend(model), cfg, tok, mode="fast", noise_scale=0.0)
    limited = VLAPlanner(
        TorchBackend(model), cfg, tok, mode="fast", noise_scale=0.0, max_jerk_up_mps3=0.05
    )
    a = plain.plan(inp).trajectory.accel
    b = limited.plan(inp).trajectory.accel
    assert np.allclose(limited.last_result.controls, plain.last_result.controls)
    a0 = float(inp.ego_history[-1, EGO_ACCEL])
    assert b[0] <= a0 + 0.05 * 0.1 + 1e-9
    assert (np.diff(b) <= 0.05 * 0.1 + 1e-9).all()
    assert (b <= a + 1e-9).all() and not np.allclose(a, b)
    off = VLAPlanner(
        TorchBackend(model), cfg, tok, mode="fast", noise_scale=0.0, max_jerk_up_mps3=0
    )
    assert np.array_equal(off.plan(inp).trajectory.accel, a)
    with pytest.raises(Exception, match="max_jerk_up_mps3"):
        VLAPlanner(TorchBackend(model), cfg, tok, max_jerk_up_mps3=-1.0)
    with pytest.raises(Exception, match="max_jerk_up_mps3"):
        tiny_config("inference.max_jerk_up_mps3=-2")


def test_planner_input_errors(parts) -> None:
    cfg, tok, model = parts
    planner = VLAPlanner(TorchBackend(model), cfg, tok, max_reasoning_tokens=2)
    inp = planner_input(cfg)
    inp.cameras = np.concatenate([inp.cameras, inp.cameras])
    with pytest.raises(InvalidInputError, match="trained on 1 cameras, the input has 2"):
        planner.plan(inp)
    inp = planner_input(cfg)
    inp.cameras = inp.cameras[:, :, :16]
    with pytest.raises(InvalidInputError, match="expects uint8"):
        planner.plan(inp)
    inp = planner_input(cfg)
    inp.cameras = None
    with pytest.raises(InvalidInputError, match="needs camera frames"):
        planner.plan(inp)
    inp = planner_input(cfg)
    inp.ego_history[3, 2] = np.nan
    with pytest.raises(InvalidInputError, match="non-finite value at row 3"):
        planner.plan(inp)
    with pytest.raises(Exception, match="explain"):
        VLAPlanner(TorchBackend(model), cfg, tok, mode="explain")


@pytest.mark.parametrize("stop_gradient", [False, True])
def test_expert_stop_gradient(parts, stop_gradient) -> None:
    """With the option set, the flow loss trains the expert only (the LM and vision keep no
    gradient from it); without it, the flow loss reaches the LM."""
    _, tok, _ = parts
    cfg = tiny_config(
        f"loss.expert_stop_gradient={str(stop_gradient).lower()}",
        "loss.reasoning_weight=0",
        "loss.trajectory_token_weight=0",
    )
    model = tiny_model(cfg, tok).train()
    ex = B.make_example(planner_input(cfg), np.full((64, 2), 0.01), "Hold the speed.", tok, cfg)
    loss, logs = model(B.collate([ex], tok.pad_id), torch.Generator().manual_seed(0))
    loss.backward()
    assert set(logs) == {"loss", "reasoning_ce", "trajectory_token_ce", "flow_mse"}
    lm_grad = model.lm.blocks[0].attn.qkv.weight.grad
    vision_grad = model.vision.patch_embed.weight.grad
    assert model.expert.in_proj.weight.grad.abs().sum() > 0
    if stop_gradient:
        assert lm_grad is None or lm_grad.abs().sum() == 0
        assert vision_grad is None or vision_grad.abs().sum() == 0
    else:
        assert lm_grad.abs().sum() > 0 and vision_grad.abs().sum() > 0


def test_several_flow_draws_equal_a_batch_of_repeated_samples(parts) -> None:
    """loss.flow_samples=n on a batch equals flow_samples=1 on the batch with each sample
    repeated n times (same generator): the draws share one LM pass, nothing else changes."""
    _, tok, _ = parts
    n = 3
    exs = [
        B.make_example(planner_input(cfg_), np.full((64, 2), a), "Hold the speed.", tok, cfg_)
        for cfg_, a in ((tiny_config(), 0.01), (tiny_config(), -0.5))
    ]
    many = tiny_model(tiny_config(f"loss.flow_samples={n}"), tok).eval()
    one = tiny_model(tiny_config(), tok).eval()
    one.load_state_dict(many.state_dict())
    loss_n, logs_n = many(B.collate(exs, tok.pad_id), torch.Generator().manual_seed(5))
    repeated = [e for e in exs for _ in range(n)]
    loss_1, logs_1 = one(B.collate(repeated, tok.pad_id), torch.Generator().manual_seed(5))
    assert abs(logs_n["flow_mse"] - logs_1["flow_mse"]) < 1e-5
    assert abs(float(loss_n.detach()) - float(loss_1.detach())) < 1e-4
    with pytest.raises(Exception, match="flow_samples"):
        tiny_config("loss.flow_samples=0")


def test_example_from_dataset_record(parts) -> None:
    from planner.data.shards import ShardRecord

    cfg, tok, _ = parts
    inp = planner_input(cfg)
    record = ShardRecord(
        key="s0",
        cameras=inp.cameras,
        arrays={
            "feat_ego_history": inp.ego_history,
            "feat_route_xy": inp.route_xy,
            "controls": np.full((64, 2), 0.02, np.float32),
        },
        info={
            "cameras": {"names": ["front"], "source": "rendered"},
            "features": {"command": "lane_follow", "speed_limit_mps": 13.9},
            "label": {"text": "Hold the speed.", "valid": True},
        },
    )
    ex = B.example_from_record(record, tok, cfg)
    assert ex[B.TEXT_IDS][0] == tok.cot_id and tok.decode(ex[B.TEXT_IDS]) == "Hold the speed."
    assert ex[B.CONTEXT_LEN] == len(tok.encode("Hold the speed.")) + 3
    record.info["label"]["valid"] = False  # an inconsistent label trains the fast layout
    assert B.example_from_record(record, tok, cfg)[B.TEXT_IDS][0] == tok.traj_id
    del record.arrays["controls"]
    with pytest.raises(InvalidInputError, match="no fitted controls"):
        B.example_from_record(record, tok, cfg)


def test_route_tokens_scale_lateral_offsets_separately() -> None:
    """route_lateral_scale_m divides y, route_scale_m x; 0 (older checkpoints) uses the one
    along-route scale for both."""
    route = np.stack([np.arange(1, 21) * 4.0, np.full(20, 1.0)], axis=1)  # 1 m left of the ego
    both = B.route_features(route, tiny_config("normalization.route_lateral_scale_m=0"))
    split = B.route_features(route, tiny_config("normalization.route_lateral_scale_m=5"))
    assert both.shape == split.shape == (5, 8)
    assert np.allclose(both[0, 1::2], 1.0 / 50.0) and np.allclose(split[0, 1::2], 1.0 / 5.0)
    assert np.allclose(both[:, 0::2], split[:, 0::2])
    assert np.isclose(split[0, 0], 4.0 / 50.0)


class StillBackend(TorchBackend):
    """Zero flow velocity: the sample stays the initial noise (the prior alone shows)."""

    def denoise_step(self, x_t, *args):
        return np.zeros_like(x_t)


def assert_runner_adds_the_prior(prompt, cfg, tok, phys) -> None:
    """With a zero flow, the runner's controls under `cfg` minus those without a prior are
    the prior `phys` (physical units): the runner adds back what training subtracts."""
    outs = {}
    for name, c in (("none", tiny_config()), ("prior", cfg)):
        runner = Runner(StillBackend(tiny_model(c, tok)), c, tok)
        outs[name] = runner.run(prompt, RunOptions(mode="fast"), np.random.default_rng(3)).controls
    np.testing.assert_allclose(outs["prior"][0] - outs["none"][0], phys, atol=1e-5)


def test_hold_decay_prior_is_subtracted_in_training_and_added_back_by_the_runner(parts) -> None:
    """flow.prior=hold_decay: the flow target is the controls minus the current accel and
    curvature decaying over prior_tau_s; the runner adds the same prior to what it samples."""
    _, tok, _ = parts
    cfg = tiny_config("flow.prior=hold_decay", "flow.prior_tau_s=2.0")
    inp = planner_input(cfg)
    inp.ego_history[-1, 5] = -1.5  # braking now (EGO_ACCEL)
    inp.ego_history[-1, 6] = 0.02  # turning left (EGO_CURV)
    prompt = B.prompt_arrays(inp, cfg)
    prior = B.action_prior(prompt[B.EGO_HISTORY], cfg)
    norm = cfg.normalization
    phys = prior * np.array([norm.accel_std_mps2, norm.curvature_std_per_m])
    decay = np.exp(-np.arange(64) * 0.1 / 2.0)
    np.testing.assert_allclose(phys[:, 0], -1.5 * decay, atol=1e-5)
    np.testing.assert_allclose(phys[:, 1], 0.02 * decay, atol=1e-6)
    assert np.allclose(B.action_prior(prompt[B.EGO_HISTORY], tiny_config()), 0.0)
    controls = np.stack([np.linspace(-2, 1, 64), np.full(64, 0.01)], axis=1)
    ex = B.make_example(inp, controls, "Hold the speed.", tok, cfg)
    np.testing.assert_allclose(
        ex[B.CONTROLS] + prior, B.normalize_controls(controls, cfg.normalization), atol=1e-5
    )
    # the trajectory tokens stay absolute (the LM bins the controls, not the residual)
    plain = B.make_example(inp, controls, "Hold the speed.", tok, tiny_config())
    assert np.array_equal(ex[B.TEXT_IDS], plain[B.TEXT_IDS])

    assert_runner_adds_the_prior(prompt, cfg, tok, phys)
    with pytest.raises(Exception, match="hold_decay"):
        tiny_config("flow.prior=linear")


def test_hold_curvature_prior_hands_on_the_curvature_but_not_the_acceleration() -> None:
    """flow.prior=hold_curvature: the acceleration prior is zero whatever the ego does (no
    feedback of the current acceleration into the next plan); the curvature decays as in
    hold_decay."""
    cfg = tiny_config("flow.prior=hold_curvature", "flow.prior_tau_s=2.0")
    inp = planner_input(cfg)
    inp.ego_history[-1, 5] = 3.5  # accelerating hard (EGO_ACCEL)
    inp.ego_history[-1, 6] = -0.03  # turning right (EGO_CURV)
    prior = B.action_prior(B.prompt_arrays(inp, cfg)[B.EGO_HISTORY], cfg)
    phys = prior * np.array(
        [cfg.normalization.accel_std_mps2, cfg.normalization.curvature_std_per_m]
    )
    assert np.all(phys[:, 0] == 0.0)
    np.testing.assert_allclose(phys[:, 1], -0.03 * np.exp(-np.arange(64) * 0.1 / 2.0), atol=1e-6)


def test_route_pursuit_prior_steers_back_to_the_route_and_follows_its_curve(parts) -> None:
    """flow.prior=route_pursuit: zero acceleration (whatever the ego does now) and the
    curvature of following the route, so a plan made of the prior alone converges onto a
    route 2 m to the left and drives a 50 m-radius route bend at 1/50 1/m; the runner adds
    back what training subtracts."""
    _, tok, _ = parts
    cfg = tiny_config("flow.prior=route_pursuit")
    norm = cfg.normalization
    scale = np.array([norm.accel_std_mps2, norm.curvature_std_per_m])
    inp = planner_input(cfg, speed_mps=15.0)
    inp.ego_history[-1, 5] = 3.5  # accelerating hard: not handed on
    inp.route_xy = np.stack([4.0 * np.arange(1, 21), np.full(20, 2.0)], axis=1)
    prompt = B.prompt_arrays(inp, cfg)
    phys = B.action_prior(prompt[B.EGO_HISTORY], cfg, prompt[B.ROUTE]) * scale
    assert np.all(phys[:, 0] == 0.0)
    path = Trajectory.from_controls(phys[:, 0], phys[:, 1], 15.0)
    assert phys[0, 1] > 0.0  # turns toward the route
    assert abs(path.xy[40, 1] - 2.0) < 0.3 and abs(path.xy[-1, 1] - 2.0) < 0.3
    bend = np.arange(1, 21) * 4.0 / 50.0
    inp.route_xy = np.stack([50 * np.sin(bend), 50 * (1 - np.cos(bend))], axis=1)
    prompt = B.prompt_arrays(inp, cfg)
    phys = B.action_prior(prompt[B.EGO_HISTORY], cfg, prompt[B.ROUTE]) * scale
    np.testing.assert_allclose(phys[:30, 1], 1 / 50.0, rtol=0.05)
    with pytest.raises(ValueError, match="route"):
        B.action_prior(prompt[B.EGO_HISTORY], cfg)

    assert_runner_adds_the_prior(prompt, cfg, tok, phys)
    controls = np.stack([np.zeros(64), np.full(64, 0.01)], axis=1)
    ex = B.make_example(inp, controls, "Hold the speed.", tok, cfg)
    np.testing.assert_allclose(
        ex[B.CONTROLS] * scale,
        controls - B.denormalize_controls(np.zeros((64, 2)), norm) - phys,
        atol=1e-5,
    )


def _prior_path(cfg, inp) -> np.ndarray:
    norm = cfg.normalization
    scale = np.array([norm.accel_std_mps2, norm.curvature_std_per_m])
    prompt = B.prompt_arrays(inp, cfg)
    phys = B.action_prior(prompt[B.EGO_HISTORY], cfg, prompt[B.ROUTE]) * scale
    return Trajectory.from_controls(phys[:, 0], phys[:, 1], inp.ego_speed).xy


def test_route_pursuit_prior_spreads_a_lane_jog_into_a_lane_change() -> None:
    """A lane-level route that switches to the lane on the left 60 m ahead steps 4 m sideways
    in one 4 m segment (lane centrelines joined). Plain pursuit turns one look-ahead before
    the step and is still mostly in the old lane where the route switches (the on-ramp
    merge's off-road failure); with flow.prior_lane_change_s the prior changes lanes before
    the step, within comfort, and settles on the new lane. Bends are left alone."""
    route = np.stack([4.0 * np.arange(1, 21), np.where(np.arange(1, 21) > 15, 4.0, 0.0)], axis=1)
    plain = tiny_config("flow.prior=route_pursuit")
    spread = tiny_config("flow.prior=route_pursuit", "flow.prior_lane_change_s=3.0")
    inp = planner_input(plain, speed_mps=15.0)
    inp.route_xy = route
    at_jog = lambda xy: float(np.interp(60.0, xy[:, 0], xy[:, 1]))  # noqa: E731
    late, early = _prior_path(plain, inp), _prior_path(spread, inp)
    assert at_jog(late) < 2.0  # the centre still on the old lane side of the line
    assert at_jog(early) > 3.0
    assert abs(early[-1, 1] - 4.0) < 0.3
    lateral_accel = np.abs(np.diff(early, n=2, axis=0)[:, 1]) / 0.1**2
    assert lateral_accel.max() < 3.0
    # the route after the jog, bends and straight routes are unchanged
    moved = B.spread_route_jogs(route, 45.0)
    np.testing.assert_array_equal(moved[15:], route[15:])
    assert np.all(moved[:3, 1] == 0.0) and moved[14, 1] == pytest.approx(4.0)
    for radius in (12.0, 50.0):
        bend = np.arange(1, 21) * 4.0 / radius
        arc = np.stack([radius * np.sin(bend), radius * (1 - np.cos(bend))], axis=1)
        np.testing.assert_array_equal(B.spread_route_jogs(arc, 45.0), arc)
    # straight through a roundabout (a real route of the roundabout family): it swings 10 m
    # sideways and back over 40 m, a curve to drive, not a lane change
    through = np.array(
        [[4.3, 0.0], [8.3, 0.0], [12.3, -0.1], [16.3, -0.8], [19.9, -2.4], [23.1, -4.8],
         [26.0, -7.6], [29.4, -9.6], [33.3, -10.4], [37.3, -9.9], [40.8, -8.1], [43.8, -5.4],
         [46.9, -2.9], [50.4, -1.1], [54.3, -0.2], [58.3, 0.0], [62.3, 0.0], [66.3, 0.0]]
    )  # fmt: skip
    np.testing.assert_array_equal(B.spread_route_jogs(through, 45.0), through)
    out_of = np.array(
        [[3.6, 0.0], [7.6, 0.0], [11.5, -0.7], [15.2, -2.2], [18.5, -4.5], [21.3, -7.3],
         [24.7, -9.4], [28.6, -10.3], [32.5, -10.0], [36.2, -8.3], [39.2, -5.7], [42.2, -3.1],
         [45.7, -1.2], [49.6, -0.2], [53.5, 0.1], [57.5, 0.1]]
    )  # fmt: skip
    np.testing.assert_array_equal(B.spread_route_jogs(out_of, 45.0), out_of)
    with pytest.raises(ConfigError, match="prior_lane_change_s"):
        tiny_config("flow.prior=route_pursuit", "flow.prior_lane_change_s=-1")


def test_control_normalisation_and_trajectory_bins_round_trip() -> None:
    cfg = tiny_config()
    rng = np.random.default_rng(0)
    controls = np.stack([rng.normal(0, 1.0, 64), rng.normal(0, 0.02, 64)], axis=1)
    norm = B.normalize_controls(controls, cfg.normalization)
    assert np.allclose(B.denormalize_controls(norm, cfg.normalization), controls, atol=1e-5)
    # clamps: beyond +-9.8 m/s^2 and +-0.33 1/m
    wild = B.denormalize_controls(np.array([[100.0, -100.0]]), cfg.normalization)
    assert np.allclose(wild, [[9.8, -0.33]])
    tt = cfg.trajectory_tokens
    chunk_means = norm.reshape(tt.chunks, tt.steps_per_token, 2).mean(axis=1)
    decoded = B.bins_to_controls(B.trajectory_bins(norm, tt), tt)[:: tt.steps_per_token]
    half_bin = tt.clip_std / (tt.bins - 1)
    inside = np.abs(chunk_means) < tt.clip_std
    assert np.all(np.abs(decoded - chunk_means)[inside] <= half_bin + 1e-6)


def test_training_forward_under_bf16_autocast(parts) -> None:
    """The trainer runs bf16 autocast on GPU; the same dtype mix must work (here on CPU)."""
    cfg, tok, _ = parts
    model = tiny_model(cfg, tok).train()
    ex = B.make_example(planner_input(cfg), np.zeros((64, 2)), "Hold the speed.", tok, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logs = model(B.collate([ex, ex], tok.pad_id), torch.Generator().manual_seed(0))
    loss.backward()
    assert np.isfinite(logs["loss"]) and model.expert.out_proj.weight.grad is not None
