"""The highlight segment embedding is worth indexing: on held-out synthetic streams, a segment's nearest
neighbour shares its planted content (same stream, same event) far more often after training than
with the embedding head re-initialised, than with an untrained model, and than by chance.

Feature route on features drawn straight from the synthetic generator (mm_live.data.synthetic_features),
so the whole file trains and probes in seconds. bench/embedding.json has the same probe at full size.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from mm_live.config import Config
from mm_live.data.synthetic import SynthConfig
from mm_live.data.synthetic_features import TEXT_DIM, VIDEO_DIM, segment_truth, synthetic_feature_items
from mm_live.neighbours import chance_rate, neighbour_rates
from mm_live.pipelines.highlight import build_model, collate, embed_features
from mm_live.quantization import learned_codebooks
from mm_live.streams import FeatureWindows
from mm_live.training import ShuffledBatches, Trainer

SEGMENT = 4
SYNTH = SynthConfig(seconds=40, seed=0)


def feature_cfg(**over) -> Config:
    cfg = Config.from_dict({
        "task": {"route": "features", "feature_dims": [VIDEO_DIM, TEXT_DIM]},
        "fusion": {"d": 32, "d_emb": 16}, "quant": {"m": 4},
        "highlight": {"d_model": 32, "n_layers": 1, "n_heads": 2, "lookback_steps": 8, "window_steps": 20,
                      "realign": False, "embed_segment_steps": SEGMENT},
        "train": {"epochs": 1000, "batch_size": 8, "warmup_steps": 5, "lr": 0.003, "eval_every": 100000}})
    return cfg.replace(**over) if over else cfg


def train_model(cfg: Config, items, out, steps: int):
    torch.manual_seed(0)
    model = build_model(cfg)
    untrained = copy.deepcopy(model)
    windows = FeatureWindows(items, window_steps=cfg.highlight.window_steps)
    batches = ShuffledBatches(windows, cfg.train.batch_size, lambda ws: collate(ws, cfg.highlight.n_streamers))
    Trainer(model, cfg, out, kind="highlight", train_data=batches, progress=False, max_steps=steps).fit()
    return model.eval(), untrained.eval()


def probe(model, items) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    vecs, stream, event = [], [], []
    for i, (rec, video, text, _) in enumerate(items):
        v, spans = embed_features(model, video, text, SEGMENT)
        vecs.append(v)
        for first, n in spans:
            stream.append(i)
            event.append(segment_truth(rec, first, n)[0])
    stream, event = np.array(stream), np.array(event)
    return np.concatenate(vecs), {"stream": stream, "event": event, "both": stream * 2 + event}


@pytest.fixture(scope="module")
def rates(tmp_path_factory):
    torch.set_num_threads(2)
    train_items = synthetic_feature_items(range(48), SYNTH)
    held_out = synthetic_feature_items(range(1000, 1016), SYNTH)  # streams never seen in training
    model, untrained = train_model(feature_cfg(), train_items, tmp_path_factory.mktemp("emb"), steps=400)
    head = copy.deepcopy(model)
    torch.manual_seed(1)
    head.embed_head.reset_parameters()  # the same run, only the embedding head random
    out = {}
    for name, m in (("trained", model), ("random head", head), ("random model", untrained)):
        vecs, labels = probe(m, held_out)
        out[name] = neighbour_rates(vecs, labels)
    out["chance"] = {k: chance_rate(y) for k, y in labels.items()}
    out["segments"] = len(vecs)
    return out


def test_segments_are_many_and_chance_is_low(rates):
    assert rates["segments"] >= 150
    assert rates["chance"]["stream"] < 0.1 and rates["chance"]["both"] < 0.05


def test_trained_embedding_finds_the_same_stream_and_event(rates):
    t, head, model, chance = rates["trained"], rates["random head"], rates["random model"], rates["chance"]
    # Same stream and same event state at once: what "more moments like this" asks for.
    assert t["both"] >= 0.35 and t["both"] >= 1.5 * head["both"] and t["both"] >= 2.5 * model["both"]
    assert t["both"] >= 8 * chance["both"]
    assert t["stream"] >= head["stream"] + 0.1 and t["stream"] >= model["stream"] + 0.2
    assert t["event"] >= model["event"] + 0.15 and t["event"] >= chance["event"] + 0.25
    assert t["event"] >= head["event"] - 0.05  # the stream term does not trade the event away


def test_learned_codebooks_train_with_the_model(tmp_path):
    cfg = feature_cfg(**{"quant.learn": True, "quant.nbits": 4, "quant.restart_every": 5})
    items = synthetic_feature_items(range(8), SYNTH)
    model, _ = train_model(cfg, items, tmp_path, steps=12)
    codebooks = learned_codebooks(model)
    assert codebooks is not None and codebooks.shape == (4, 16, 4)
    assert int(model.quantizer.steps) > 0  # k-means start done, then straight-through steps
    assert learned_codebooks(build_model(feature_cfg())) is None
