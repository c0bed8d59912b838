import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import faiss
import numpy as np
import pytest

from mm_live.errors import ConfigError, DataError
from mm_live.index import IndexBuilder, IndexSpec, ItemRow, export_index, open_index, search
from mm_live.quantization import ProductQuantizer

REPO = Path(__file__).resolve().parents[1]
D, M, NBITS = 16, 4, 5


def unit_vectors(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rows_for(n: int, offset: int = 0) -> list[ItemRow]:
    return [ItemRow(f"stream{(offset + i) // 10}", float((offset + i) % 10) * 2, float((offset + i) % 10) * 2 + 2)
            for i in range(n)]


@pytest.fixture(scope="module")
def model_pq():
    return ProductQuantizer(D, m=M, nbits=NBITS).fit(unit_vectors(600, seed=1), niter=10)


@pytest.fixture
def exported(tmp_path, model_pq):
    x = unit_vectors(300)
    out = export_index(tmp_path / "idx", x, rows_for(300), IndexSpec(D, M, NBITS), config_hash="cfg-a",
                       codebooks=model_pq.codebooks_numpy(), ids=np.arange(300) * 10 + 5)
    return out, x


def test_round_trip_keeps_the_model_codes_rows_and_ids(exported, model_pq):
    out, x = exported
    assert sorted(p.name for p in out.iterdir()) == ["index.faiss", "index.json"]
    ix = open_index(out, expect_config_hash="cfg-a")
    meta = ix.meta
    assert (meta["kind"], meta["d"], meta["m"], meta["nbits"], meta["count"], meta["codebooks"]) == ("pq", D, M, NBITS, 300, "model")
    assert meta["metric"] == "inner_product" and meta["normalized"] is True
    pq_index = faiss.downcast_index(ix.index.index)
    stored = faiss.unpack_bitstrings(faiss.vector_to_array(pq_index.codes).reshape(300, -1), M, NBITS)
    np.testing.assert_array_equal(stored, model_pq.encode(x).long().numpy())  # the file holds the model's codes
    np.testing.assert_allclose(ix.vector(5 + 10 * 7), model_pq.decode(model_pq.encode(x[7:8]))[0].numpy(), rtol=1e-6)
    res = search(ix, x[[7, 42]], k=3)
    assert res.ids.shape == res.scores.shape == (2, 3)
    hit = res.hits[0][0]
    assert (hit.id, hit.stream_id, hit.start, hit.end) == (75, "stream0", 14.0, 16.0)
    decoded = model_pq.decode(model_pq.encode(x)).numpy()
    np.testing.assert_allclose(res.scores[1], np.sort(decoded @ x[42])[::-1][:3], rtol=1e-5)  # ADC scores


def test_missing_sidecar_is_one_clear_error(exported):
    out, _ = exported
    (out / "index.json").unlink()
    with pytest.raises(DataError, match=r"index.json is missing: the export did not finish; re-run mm-live export-index"):
        open_index(out)


def test_corrupt_index_file_is_one_clear_error(exported):
    out, _ = exported
    blob = (out / "index.faiss").read_bytes()
    (out / "index.faiss").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"index.faiss is corrupt or truncated"):
        open_index(out)


def test_sidecar_from_another_config_is_one_clear_error(exported):
    out, _ = exported
    with pytest.raises(DataError, match=r"exported from model config cfg-a, but this model's config is cfg-b: re-export"):
        open_index(out, expect_config_hash="cfg-b")


def test_dims_mismatch_between_files_and_queries(exported):
    out, x = exported
    meta = json.loads((out / "index.json").read_text())
    meta["d"] = 32
    (out / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"holds 16-dim vectors but .*index.json says d=32"):
        open_index(out)
    meta["d"] = D
    (out / "index.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"query vectors have shape \(1, 8\), the index .* holds 16-dim vectors"):
        search(open_index(out), np.zeros(8, np.float32), k=2)


def test_missing_directory_and_unknown_id(tmp_path, exported):
    with pytest.raises(DataError, match="not found: run mm-live export-index"):
        open_index(tmp_path / "nope")
    with pytest.raises(DataError, match="id 6 is not in the index"):
        open_index(exported[0]).vector(6)


@pytest.mark.parametrize("refine", ["none", "sq8", "pq8"])
def test_ivfpq_export_searches_with_faiss_codebooks(tmp_path, model_pq, refine):
    x = unit_vectors(1200, seed=2)
    spec = IndexSpec(D, M, NBITS, ivf_lists=8, refine=refine, nprobe=8, k_factor=32)
    out = export_index(tmp_path / "ivf", x, rows_for(1200), spec, config_hash="h", codebooks=model_pq.codebooks_numpy())
    ix = open_index(out)
    assert ix.meta["codebooks"] == "faiss"  # residual PQ: faiss trains it, the model's codebooks do not apply
    exact = np.argsort(-(x[:50] @ x.T), axis=1)[:, :5]

    def recall(**params):
        res = search(ix, x[:50], k=5, **params)
        return np.mean([len(set(a) & set(b)) / 5 for a, b in zip(res.ids, exact)]), res

    r_default, res = recall()
    assert res.ids[0, 0] == 0 and res.hits[0][0].stream_id == "stream0"
    if refine == "none":
        assert r_default > 0.3 and recall(nprobe=1)[0] < r_default  # nprobe reaches the IVF inside the wrapper
    else:
        assert r_default > 0.95 and recall(k_factor=1)[0] < r_default - 0.2  # k_factor reaches the refine stage
        true_cos = np.einsum("qd,qkd->qk", x[:50], x[res.ids])
        np.testing.assert_allclose(res.scores, true_cos, atol=0.03)  # cosine, also from the L2-based pq8
    np.testing.assert_allclose(np.linalg.norm(ix.vector(3)), 1.0, atol=0.05 if refine != "none" else 0.3)


def test_bad_specs_and_ids_are_refused(tmp_path):
    x = unit_vectors(40)
    with pytest.raises(ConfigError, match="residual PQ.*needs an IVF index"):
        export_index(tmp_path / "a", x, rows_for(40), IndexSpec(D, M, 4, refine="pq8"), config_hash="h")
    with pytest.raises(DataError, match="40 vectors cannot train ivf_lists=64"):
        export_index(tmp_path / "a", x, rows_for(40), IndexSpec(D, M, 4, ivf_lists=64), config_hash="h")
    with pytest.raises(DataError, match="ids must be unique"):
        export_index(tmp_path / "a", x, rows_for(40), IndexSpec(D, M, 4), config_hash="h", ids=np.zeros(40))
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- resumable export

BUILD_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from mm_live.index import IndexBuilder, IndexSpec, ItemRow

    def build(out, stop_after, codebooks):
        b = IndexBuilder(out, IndexSpec({d}, {m}, {nbits}), config_hash="cfg", codebooks=codebooks, progress=False)
        for s in range(4):
            key = f"stream{{s}}"
            if b.done(key):
                continue
            if s == stop_after:
                os.kill(os.getpid(), signal.SIGKILL)  # killed mid-export (OOM killer, kill -9)
            x = np.random.default_rng(s).standard_normal((50, {d})).astype(np.float32)
            b.add(key, x, [ItemRow(key, float(t), float(t + 1)) for t in range(50)])
        return b.finalize()

    if __name__ == "__main__":
        build(sys.argv[1], int(sys.argv[2]), np.load(sys.argv[3]))
""").format(d=D, m=M, nbits=NBITS)


def test_killed_export_leaves_nothing_and_rerun_equals_an_uninterrupted_build(tmp_path, model_pq):
    cb = tmp_path / "codebooks.npy"
    np.save(cb, model_pq.codebooks_numpy())
    out, ref = tmp_path / "killed", tmp_path / "clean"
    killed = subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(out), "2", str(cb)],
                            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()  # no index visible after the kill
    staging = tmp_path / ".killed.partial"
    assert [json.loads(line)["key"] for line in (staging / "shards.jsonl").read_text().splitlines()] == ["stream0", "stream1"]

    ns: dict = {"__name__": "build_script"}
    exec(BUILD_SCRIPT, ns)
    b = IndexBuilder(out, IndexSpec(D, M, NBITS), config_hash="cfg", codebooks=model_pq.codebooks_numpy(), progress=False)
    assert [b.done(f"stream{s}") for s in range(4)] == [True, True, False, False] and b.count == 100
    ns["build"](out, -1, model_pq.codebooks_numpy())  # the rerun completes
    ns["build"](ref, -1, model_pq.codebooks_numpy())  # an uninterrupted build
    assert not staging.exists() and not (tmp_path / ".clean.partial").exists()
    for name in ("index.faiss", "index.json"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()
    assert len(open_index(out)) == 200


def test_a_manifest_line_torn_by_a_kill_is_dropped_and_the_shard_redone(tmp_path):
    out = tmp_path / "idx"
    b = IndexBuilder(out, IndexSpec(D, M, 4), config_hash="h", progress=False)
    b.add("a", unit_vectors(20), rows_for(20))
    with open(tmp_path / ".idx.partial" / "shards.jsonl", "a") as fh:
        fh.write('{"key": "b", "st')  # the process died while appending shard b's line
    b = IndexBuilder(out, IndexSpec(D, M, 4), config_hash="h", progress=False)
    assert b.done("a") and not b.done("b")
    b.add("b", unit_vectors(20, seed=1), rows_for(20, offset=20))
    b.finalize()
    ix = open_index(out)
    assert len(ix) == 40 and ix.row(39) == ItemRow("stream3", 18.0, 20.0)


def test_staging_from_another_model_is_discarded(tmp_path, model_pq):
    out = tmp_path / "idx"
    b = IndexBuilder(out, IndexSpec(D, M, NBITS), config_hash="old", progress=False)
    b.add("a", unit_vectors(40), rows_for(40))
    b2 = IndexBuilder(out, IndexSpec(D, M, NBITS), config_hash="new", codebooks=model_pq.codebooks_numpy(), progress=False)
    assert not b2.done("a")
    b2.add("b", unit_vectors(40, seed=1), rows_for(40))
    b2.finalize()
    assert open_index(out, expect_config_hash="new").meta["count"] == 40


def test_interrupted_by_an_exception_leaves_no_index(tmp_path, model_pq, monkeypatch):
    import mm_live.index as index_mod

    out = tmp_path / "idx"
    b = IndexBuilder(out, IndexSpec(D, M, NBITS), config_hash="h", codebooks=model_pq.codebooks_numpy(), progress=False)
    b.add("a", unit_vectors(40), rows_for(40))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(index_mod, "add_vectors", boom)
    with pytest.raises(KeyboardInterrupt):
        b.finalize()
    assert not out.exists() and (tmp_path / ".idx.partial" / "shards.jsonl").is_file()
    monkeypatch.undo()
    IndexBuilder(out, IndexSpec(D, M, NBITS), config_hash="h", codebooks=model_pq.codebooks_numpy(), progress=False).finalize()
    assert len(open_index(out)) == 40
