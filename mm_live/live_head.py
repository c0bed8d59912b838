"""The highlight head one step at a time: ``HighlightModel.forward_steps`` for a stream that grows.

:class:`HighlightStepper` takes each step's :class:`~mm_live.steps.StepFeatures` as it arrives and
returns the logits of the steps that became final, in order. It computes what one
``forward_steps`` pass over the whole stream computes (tested to 1e-5), with constant memory:

* comment re-alignment: the open-end DTW of :func:`mm_live.alignment.online_dtw_index` keeps one
  row of its accumulated-cost table; text step ``i`` adds its embedding to the video step it
  refers to (in ``[i - w, i]``), so video step ``j`` is final once step ``j + w`` is in — the
  ``max_comment_lag`` delay causality requires (none with both re-alignment and look-ahead off);
* the comment look-ahead (``highlight.comment_lookahead``): step ``t`` reads the comments of steps
  ``t .. t + w``, so it too is final ``w`` steps late; steps past the end of the stream count as
  comment-free, as in one pass over the whole stream;
* the temporal transformer: step ``t`` sees the input steps ``stream_start(t) .. t`` that
  :meth:`~mm_live.temporal.CausalTemporalTransformer.stream` gives it (a ring of at most
  ``window_steps`` inputs is kept).

``state_dict()`` / ``load_state_dict()`` carry exactly this ring, so a restarted watcher continues
the same scores.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mm_live.alignment import _entry_terms
from mm_live.steps import StepFeatures


class HighlightStepper:
    """Incremental ``forward_steps`` of a :class:`~mm_live.pipelines.highlight.HighlightModel` in eval mode."""

    def __init__(self, model, streamer: torch.Tensor):
        h = model.cfg.highlight
        self.model = model
        self.realign = bool(model.use_alignment and h.realign)
        self.shift = h.realign_by == "shift"
        self.lookahead = model.lookahead
        self.lag = int(model.cfg.media.max_comment_lag) if self.realign or self.lookahead is not None else 0
        w = h.window_steps
        self.window, self.context = max(1, w // 2), w - max(1, w // 2)
        self.streamer = streamer  # [1] hashed id
        self.next_in = 0  # steps pushed so far
        self.next_out = 0  # steps whose logits were returned
        self.x: list[torch.Tensor] = []  # temporal inputs of steps x_start .. next_out - 1
        self.x_start = 0
        # steps next_out .. next_in - 1: fused, z, v, sum, count (re-alignment), text, has (look-ahead)
        self.pending: list[dict[str, torch.Tensor]] = []
        self.cost_row: np.ndarray | None = None  # last row of the online DTW table [w + 1]

    @torch.inference_mode()
    def push(self, f: StepFeatures) -> list[tuple[int, float]]:
        """Step features of N new steps (``[1, N, ...]``) -> ``(step, logit)`` of the steps now final."""
        m = self.model
        z, v = m.text_proj(f.text[0]), m.video_proj(f.video[0])  # [N, D_ALIGN]
        streamer = m.streamer(self.streamer)[0]
        out = []
        for k in range(z.shape[0]):
            has = bool(f.has_text[0, k])
            self.pending.append({"fused": f.fused[0, k] + streamer, "z": z[k], "v": v[k],
                                 "sum": torch.zeros_like(z[k]), "count": torch.zeros((), dtype=torch.long),
                                 "text": f.text[0, k], "has": f.has_text[0, k].clone(), "level": f.level[0, k]})
            i = self.next_in
            self.next_in += 1
            if self.realign:
                j = self._align(i, z[k])
                if has:
                    p = self.pending[j - self.next_out]
                    p["sum"], p["count"] = p["sum"] + z[k], p["count"] + 1
            else:
                p = self.pending[-1]
                p["sum"], p["count"] = (z[k], torch.ones((), dtype=torch.long)) if has else (torch.zeros_like(z[k]), p["count"])
            while self.next_out <= self.next_in - 1 - self.lag:
                out.append(self._emit())
        return out

    @torch.inference_mode()
    def finish(self) -> list[tuple[int, float]]:
        """End of stream: the logits of the last ``lag`` steps (no later comment can move to them)."""
        return [self._emit() for _ in range(len(self.pending))]

    def _align(self, i: int, z: torch.Tensor) -> int:
        """Add row i of the online DTW table; the video step text step i refers to."""
        w = self.lag
        lo = max(0, i - w, self.next_out)  # next_out > i - w only after finish() and a resume: no moving back
        if self.shift:  # highlight.realign_by: shift, as realign_comments(by="shift")
            return lo
        band_v = torch.stack([p["v"] for p in self.pending[lo - self.next_out :]])  # video steps lo .. i
        # as mm_live.alignment.cosine_cost: 1 - cos, in float32, then float64
        d = (1.0 - F.normalize(z[None].float(), dim=-1) @ F.normalize(band_v.float(), dim=-1).T)[0].double().numpy()
        row = np.zeros(w + 1)
        row[w - (i - lo) :] = d  # column o <-> video step i - w + o
        ok = np.arange(w + 1) >= w - (i - lo)
        if self.cost_row is None:
            c = np.full(w + 1, np.inf)
            c[w] = row[w]
        else:
            T, S = _entry_terms(np.stack([self.cost_row, self.cost_row]), np.stack([row, row]), 1)
            c = np.where(ok, S + np.minimum.accumulate(np.where(ok, T, np.inf)), np.inf)
            if not np.isfinite(c).any():
                c = np.where(np.arange(w + 1) == w, row, np.inf)
        self.cost_row = c
        return i - w + int(np.argmin(c))

    def _emit(self) -> tuple[int, float]:
        m, p, t = self.model, self.pending.pop(0), self.next_out
        count = p["count"]
        z_in = p["sum"] / count.clamp(min=1).to(p["sum"].dtype)
        mask = (count > 0).to(p["z"].dtype)
        step = p["fused"]
        if self.lookahead is not None:  # the comments of steps t .. t + lag: p and the next pending ones
            ahead = [p] + self.pending[: self.lag]
            text = p["text"].new_zeros(self.lag + 1, p["text"].shape[0])
            has = torch.zeros(self.lag + 1, dtype=torch.bool, device=text.device)
            text[: len(ahead)] = torch.stack([a["text"] for a in ahead])
            has[: len(ahead)] = torch.stack([a["has"] for a in ahead])
            step = step + self.lookahead.attend(step, text, has)
        self.x.append(torch.cat([step, z_in, mask[None]]))
        start = m.temporal.stream_start(t, self.window, self.context)
        drop = start - self.x_start
        if drop > 0:
            del self.x[:drop]
            self.x_start = start
        hidden = m.temporal(torch.stack(self.x)[None])[0, -1]
        self.next_out += 1
        return t, float(m.score(hidden, p.get("level", hidden.new_zeros(()))))  # states saved before level: 0

    def state_dict(self) -> dict:
        return {"next_in": self.next_in, "next_out": self.next_out, "x_start": self.x_start,
                "x": [x.clone() for x in self.x], "pending": [{k: v.clone() for k, v in p.items()} for p in self.pending],
                "cost_row": None if self.cost_row is None else torch.from_numpy(self.cost_row.copy())}

    def load_state_dict(self, state: dict) -> None:
        self.next_in, self.next_out, self.x_start = state["next_in"], state["next_out"], state["x_start"]
        self.x, self.pending = list(state["x"]), list(state["pending"])
        self.cost_row = None if state["cost_row"] is None else state["cost_row"].numpy().copy()
