"""The tiny highlight configuration the pipeline tests share (random tiny backbones, small widths)."""

TINY = {
    "media": {"frame_size": 64},
    "encoders": {"frame": {"backbone": "tiny"}, "audio": {"backbone": "tiny"},
                 "comment": {"backbone": "tiny", "max_comments_per_step": 8}},
    "fusion": {"d": 32, "n_queries": 4, "n_layers": 1, "n_heads": 2, "d_emb": 16},
    "quant": {"m": 4},
    "highlight": {"d_model": 32, "n_layers": 2, "n_heads": 2, "lookback_steps": 8},
    "train": {"epochs": 2, "batch_size": 2, "eval_every": 2, "warmup_steps": 1, "lr": 0.003},
}
