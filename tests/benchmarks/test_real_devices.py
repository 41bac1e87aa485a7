"""benchmarks/real_devices.py: the study's rows, the prediction arithmetic, and the --quick path
end to end on a shrunken Gemma 3 (the real one takes minutes; docs/fidelity.md has its run)."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

import benchmarks.real_devices as rd
from benchmarks.real_devices_study import (
    _JET_UP,
    CPP_CPU,
    CPP_SPLIT,
    JETSON,
    PHONE,
    ROWS,
    TORCH_GPU,
    Prediction,
    bytes_max_error_pct,
    fit_efficiency,
    fitted_rss_mb,
    fitted_step_s,
    held_out_medians,
    split_client_held_bytes,
    split_step_payload_bytes,
)
from testbed.ml.memory_need import lora_params
from testbed.ml.study_models import ATTENTION, FEDAVG_LORA, build_gemma3_270m, gemma3_270m_facts
from tests.testbed.fake_hosts import fake_host

TINY = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32}


def test_the_jetson_upload_is_exactly_the_fp32_q_k_v_o_adapter() -> None:
    # PROFILE:222 (8 clients) less 5 phones at REPORT:150, per Jetson
    assert _JET_UP == 2_949_120
    assert lora_params(gemma3_270m_facts(), FEDAVG_LORA.config(), ATTENTION, 18) * 4 == 2_949_120


def test_the_split_upload_is_the_studys_five_arrays_per_step() -> None:
    # split_flower_client.cpp:511-542: activation f32 [8,64,640], target embedding f32 [8,640],
    # mask i32 [8,64], target ids i32 [8,64] (next-token LM), valid lengths i32 [8]; 10 steps a round
    per_step = 8 * 64 * 640 * 4 + 8 * 640 * 4 + 8 * 64 * 4 + 8 * 64 * 4 + 8 * 4
    assert split_step_payload_bytes(8, 64, 640) == per_step == 1_335_328
    split_rows = [r for r in ROWS if r.split and r.bytes_comparable]
    assert len(split_rows) == 8
    assert all(r.up_bytes == pytest.approx(10 * per_step, rel=5e-5) for r in split_rows)  # 13.353 MB


def test_split_rows_compare_the_clients_own_time_not_the_servers_step() -> None:
    # PROFILE:325-332: the "step" column (0.195 s everywhere) is the server's suffix step, ten of
    # them make the full round; the client's own round (4th column) over its 10 steps is compared
    split_rows = [r for r in ROWS if r.split and r.step_s is not None]
    assert len(split_rows) == 8 and all(r.runtime == CPP_SPLIT for r in split_rows)
    assert [round(r.step_s, 4) for r in split_rows] == [0.0045, 0.0046, 0.0046, 0.0090, 0.0082, 0.0087, 0.0088, 0.0085]
    assert [r.server_step_s for r in split_rows][:4] == [0.1957, 0.1956, 0.1956, 0.1951]
    assert not any(r.fit for r in split_rows)


def test_rows_every_published_client_and_the_fit_set() -> None:
    assert len([r for r in ROWS if r.run == "FedAvg WikiText"]) == 8
    assert all(r.fit == (r.run == "FedAvg WikiText") for r in ROWS)
    assert {r.runtime for r in ROWS if r.fit} == {CPP_CPU, TORCH_GPU}
    assert not any(r.rss_comparable for r in ROWS if r.device == JETSON and r.runtime == TORCH_GPU)


def _preds(step_factor: dict[str, float], rss_factor: float, bytes_factor: float) -> list[Prediction]:
    return [Prediction(None if r.step_s is None else r.step_s * step_factor.get((r.runtime, r.device),
                                                                              step_factor.get(r.runtime, 1.0)),
                       None if r.rss_mb is None else r.rss_mb * (rss_factor if r.rss_comparable else 5.0),
                       (r.up_bytes or 1.0) * (bytes_factor if r.bytes_comparable else 10.0)) for r in ROWS]


def test_fit_and_held_out_arithmetic() -> None:
    rows = list(ROWS)
    preds = _preds({CPP_CPU: 0.1, TORCH_GPU: 2.0, CPP_SPLIT: 0.5}, rss_factor=1.1, bytes_factor=1.02)
    eff = fit_efficiency(rows, preds)
    assert eff.by_runtime == pytest.approx({CPP_CPU: 0.1, TORCH_GPU: 2.0})
    assert eff.by_runtime_device == pytest.approx({(CPP_SPLIT, JETSON): 0.5, (CPP_SPLIT, PHONE): 0.5})
    assert fitted_step_s(rows[0], preds[0], eff) == pytest.approx(rows[0].step_s)
    step_med, rss_med = held_out_medians(rows, preds, eff)
    assert step_med == pytest.approx(1.0)
    # the Jetsons' PyTorch rows (x5) are not compared; the split rows' RSS (x1.1) gets the other
    # class's published - predicted median: -0.1 x 1155.2 for the Jetsons, -0.1 x 1391.1 for the
    # phones, so 5 MMLU phones at 1.1, 3 Jetsons at 1.1 - 115.52 / 1391.1 (the median), 5 phones at 0.98
    assert rss_med == pytest.approx(1.1 - 115.52 / 1391.1)
    assert bytes_max_error_pct(rows, preds) == pytest.approx(2.0)  # the per-prompt row (x10) is left out
    # a held-out row twice as slow as predicted moves the median only through its rank
    slow = [replace(p, step_s=p.step_s * 0.5) if r.run == "FedAvg MMLU" and p.step_s else p
            for r, p in zip(rows, preds, strict=True)]
    assert held_out_medians(rows, slow, eff)[0] == pytest.approx(1.0)


def test_the_split_efficiency_is_fitted_on_the_other_device_class_only() -> None:
    # split rows: Jetsons predicted 0.2x their published time, phones 0.04x; each class's
    # efficiency is the other's median, so a Jetson row comes out at 0.2 / 0.04 = 5x, a phone at 0.2x
    rows = list(ROWS)
    preds = _preds({CPP_CPU: 0.1, TORCH_GPU: 2.0, (CPP_SPLIT, JETSON): 0.2, (CPP_SPLIT, PHONE): 0.04},
                   rss_factor=1.0, bytes_factor=1.0)
    eff = fit_efficiency(rows, preds)
    assert eff.by_runtime_device == pytest.approx({(CPP_SPLIT, JETSON): 0.04, (CPP_SPLIT, PHONE): 0.2})
    split = [(r, p) for r, p in zip(rows, preds, strict=True) if r.runtime == CPP_SPLIT and r.step_s]
    ratios = [fitted_step_s(r, p, eff) / r.step_s for r, p in split]
    assert ratios == pytest.approx([5.0] * 3 + [0.2] * 5)
    # a change in the phones' own rows moves only the Jetsons' prediction
    preds2 = [replace(p, step_s=p.step_s * 3) if r.runtime == CPP_SPLIT and r.device == PHONE and p.step_s else p
              for r, p in zip(rows, preds, strict=True)]
    eff2 = fit_efficiency(rows, preds2)
    assert eff2.by_runtime_device[(CPP_SPLIT, PHONE)] == pytest.approx(0.2)
    assert eff2.by_runtime_device[(CPP_SPLIT, JETSON)] == pytest.approx(0.12)
    # held out: 8 MMLU rows at 1.0, 4 validation rows at 1.0, 3 Jetson split rows at 5, 5 phone rows at 0.2
    assert held_out_medians(rows, preds, eff)[0] == pytest.approx(1.0)


def test_the_split_clients_held_payloads_by_hand() -> None:
    # RSS sampled after each of 10 steps (split_flower_client.cpp:483-499), averaged (:553-556):
    # after step k the round's batch holds k steps and the step's own batch one more
    per_step = 8 * 64 * 640 * 4 + 8 * 640 * 4 + 2 * 8 * 64 * 4 + 8 * 4
    assert split_client_held_bytes(8, 64, 640) == pytest.approx(per_step * (2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11) / 10)
    assert split_client_held_bytes(8, 64, 640) == pytest.approx(8_679_632)  # 6.5 steps = 8.28 MiB
    assert split_client_held_bytes(8, 64, 640, local_steps=1) == 2 * per_step


def test_memory_model_of_the_split_client() -> None:
    facts = gemma3_270m_facts()
    pred = rd.rss_mib(weights_params=facts.embed_params, trainable=0, tokens=0, blocks=0) + 8_679_632 / 2**20
    assert facts.embed_params == 262_144 * 640
    assert pred == pytest.approx(640 + 100 + 8.2775, abs=1e-3)  # 748.28 MiB
    assert pred / 1155.2 == pytest.approx(0.6477, abs=1e-4)  # nova_19, PROFILE:328
    assert pred / 1390.6 == pytest.approx(0.5381, abs=1e-4)  # jetson_121, PROFILE:325


def test_the_split_rss_term_is_fitted_on_the_other_device_class_only() -> None:
    # the real predictions (predict's arithmetic; step and bytes inputs are placeholders)
    m = {"n_base": 268_098_176, "n_params": 268_835_456, "n_trainable": 737_280, "bytes": {4: 1, 8: 1, 16: 1},
         "host_s": dict.fromkeys((rd.PHONE_B8, rd.JETSON_MB1, rd.VALIDATION_B1), 1.0),
         "split_host_s": dict.fromkeys((rd.PHONE_B8, rd.VALIDATION_B1), 1e-3),
         "split_bytes": dict.fromkeys((rd.PHONE_B8, rd.VALIDATION_B1), 1)}
    rows = list(ROWS)
    preds = [rd.predict(r, fake_host(threads=2), m) for r in rows]
    split_pred = 640 + 100 + 8_679_632 / 2**20  # 748.28 MiB, the memory model's split client
    fit = fit_efficiency(rows, preds)
    # the Jetsons' term is the phones' published - predicted median (nova_19, 1155.2), the
    # phones' the Jetsons' (1391.1); 235.9 MiB apart
    assert fit.rss_extra_mib == pytest.approx({(CPP_SPLIT, JETSON): 1155.2 - split_pred,
                                               (CPP_SPLIT, PHONE): 1391.1 - split_pred}, abs=1e-6)
    assert fit.rss_extra_mib[(CPP_SPLIT, JETSON)] == pytest.approx(406.92, abs=0.01)
    assert fit.rss_extra_mib[(CPP_SPLIT, PHONE)] == pytest.approx(642.82, abs=0.01)
    split = [(r, p) for r, p in zip(rows, preds, strict=True) if r.runtime == CPP_SPLIT and r.rss_mb is not None]
    assert [p.rss_mb for _, p in split] == pytest.approx([split_pred] * 8, abs=1e-6)  # sourced-only unchanged
    ratios = [fitted_rss_mb(r, p, fit) / r.rss_mb for r, p in split]
    assert ratios == pytest.approx([1155.2 / 1390.6, 1155.2 / 1391.1, 1155.2 / 1391.1]
                                   + [1391.1 / x for x in (1155.2, 1155.1, 1155.3, 1155.6, 1154.9)], abs=1e-9)
    assert [round(x, 3) for x in ratios] == [0.831, 0.83, 0.83, 1.204, 1.204, 1.204, 1.204, 1.205]
    # the FedAvg rows get no term
    mmlu = next(i for i, r in enumerate(rows) if r.run == "FedAvg MMLU" and r.device == PHONE)
    assert fitted_rss_mb(rows[mmlu], preds[mmlu], fit) == preds[mmlu].rss_mb == pytest.approx(1156.46, abs=0.01)
    # held out: 3 Jetsons at 0.83, 5 MMLU phones at 1.078-1.082, 5 split phones at 1.20; the 7th of 13
    # is the MMLU nova_72 (1070.8 MiB)
    assert held_out_medians(rows, preds, fit)[1] == pytest.approx(preds[mmlu].rss_mb / 1070.8)
    assert round(held_out_medians(rows, preds, fit)[1], 3) == 1.080
    # a change in the phones' published RSS moves only the Jetsons' term
    phones_up = [replace(r, rss_mb=r.rss_mb + 100) if r.runtime == CPP_SPLIT and r.device == PHONE and r.rss_mb else r
                 for r in rows]
    fit2 = fit_efficiency(phones_up, preds)
    assert fit2.rss_extra_mib[(CPP_SPLIT, JETSON)] == pytest.approx(1255.2 - split_pred)
    assert fit2.rss_extra_mib[(CPP_SPLIT, PHONE)] == pytest.approx(1391.1 - split_pred)


def test_memory_model_of_the_phone_step() -> None:
    rss = rd.rss_mib(weights_params=268_098_176, trainable=737_280, tokens=512, blocks=18)
    assert rss == pytest.approx((268_098_176 * 4 + 737_280 * 16 + 512 * 640 * 18 * 4) / 2**20 + 100)  # 1156.46


def test_adapter_bytes_of_the_real_layer_shapes_within_5_percent_of_published() -> None:
    base = build_gemma3_270m(vocab_size=256)  # q/k/v/o adapters do not depend on the vocabulary
    sizes = {r: rd.adapter_bytes(base, r) for r in (4, 8, 16)}
    assert sizes[8] == 2_949_120 + 18_720  # the tensors plus the safetensors header
    for rank, published in ((4, 1_486_080), (8, 2_960_640), (16, 5_909_760)):  # REPORT:294-296
        assert abs(sizes[rank] / published - 1) < 0.05
    assert abs(sizes[8] / 2_949_120 - 1) < 0.05  # the Jetsons' upload


def test_quick_path_end_to_end_on_a_tiny_gemma(monkeypatch, capsys) -> None:
    monkeypatch.setattr(rd, "build_gemma3_270m", lambda seed=0: build_gemma3_270m(seed=seed, **TINY))
    monkeypatch.setattr(rd, "calibrate_host", lambda threads, seconds: fake_host(threads=threads))
    torch.manual_seed(0)
    assert rd.main(["--quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"held-out median step-time ratio: \d+\.\d{3}", out[-3])
    assert re.fullmatch(r"held-out median rss ratio: \d+\.\d{3}", out[-2])
    assert re.fullmatch(r"bytes max error %: \d+\.\d{2}", out[-1])
    text = "\n".join(out)
    assert "1. From sourced device numbers alone (no fitting)" in text and "2b. Held-out rows" in text
    assert text.count("current_system_and_device_profile_20260421.md:") >= 32  # every client row, twice
    # a tiny model's split payload: hidden f32 [8,64,64] + mask u8 + labels i32, 10 steps, + headers
    split_b = 10 * (8 * 64 * 64 * 4 + 8 * 64 + 8 * 64 * 4)
    line = next(s for s in out if s.startswith("SplitLoRA WikiText l10      nova_19"))
    fields = line.split("  docs/")[0].split()
    assert split_b < float(fields[-2]) < split_b + 10 * 400
    assert "2c. Held-out rows, C++ split client (copies) fitted leave-one-group-out" in text
    assert "0.1951 s = server step" in line
    terms = next(s for s in out if s.startswith("fitted leave-one-group-out, process memory"))
    assert "for the jetson rows 406.9 " in terms and "for the phone rows 642.8 " in terms  # from the 270M's facts, not the tiny model
