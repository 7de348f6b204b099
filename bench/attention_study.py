"""Does the memory's attention point at the evidence? The memory has the document in its KV
cache; when it reads the recall task (with the question), each attention head spreads its
weight over the document's tokens. Summed per chunk, a head's weights rank the chunks, as
retrieval heads do in larger models (query-focused retrieval heads, QRHead, arXiv:2506.09944).

For every question: the memory (default 0.5B, default 8K window) reads the recall task once
with the recall adapter off and once with it on; llama.cpp's graph callback (``cb_eval``)
hands over each layer's attention inputs (the task's queries, the cached keys, the mask) and
the attention weights are computed from them here, so the memory runs exactly as in
``ask`` (flash attention on). Per chunk that appears in the memory (the 8K window holds an
extract of a 32K haystack), the weight of every (layer, head) is kept, averaged over the
task's tokens and over the question's tokens alone.

The summary picks heads on one set of questions (each head alone ranks chunks; the best
``--heads`` by recall@5) and scores them on another, alone and fused with the question's
hybrid ranking and with the 1.5B judge's (the scores stored by bench/pointer_study.py for the
same questions), as the plans fuse (weighted RRF: first round 1, judge 2, attention 1).

    python bench/attention_study.py --first-index 0 --limit 20 --out /tmp/att_0-19
    python bench/attention_study.py --first-index 200 --limit 20 --out /tmp/att_200-219
    python bench/attention_study.py --summarize /tmp/att_0-19 /tmp/att_200-219 \\
        --judge-from docs/results/pointer_study_0-19.json docs/results/pointer_study_200-219.json \\
        --out docs/results/attention_study_tuning40.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # study_results, beside this script
from study_results import add_question_set_args  # noqa: E402


class GgmlTensor(ctypes.Structure):
    """``struct ggml_tensor`` of the vendored ggml.h (read-only use in the callback)."""


GgmlTensor._fields_ = [
    ("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4),
    ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16), ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GgmlTensor) * 10), ("view_src", ctypes.POINTER(GgmlTensor)),
    ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64),
    ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]

_DTYPES = {0: np.float32, 1: np.float16}  # GGML_TYPE_F32, GGML_TYPE_F16


def _array(t: GgmlTensor) -> np.ndarray:
    """A copy of a CPU tensor (any strides), shaped (ne3, ne2, ne1, ne0)."""
    dt = np.dtype(_DTYPES[t.type])
    ne, nb = list(t.ne), list(t.nb)
    extent = sum((ne[i] - 1) * nb[i] for i in range(4)) + dt.itemsize
    buf = (ctypes.c_uint8 * extent).from_address(t.data)
    flat = np.ndarray((extent // dt.itemsize,), dt, buf)
    return np.lib.stride_tricks.as_strided(flat, shape=ne[::-1], strides=nb[::-1]).astype(np.float32)


class AttentionProbe:
    """Attention weights of every layer for the tokens decoded while ``active``: the flash
    attention node (its sources are the queries ``Qcur-*`` and the cached keys ``cache_k_l*``)
    is observed and softmax(q.k * scale + mask) computed from its inputs."""

    def __init__(self) -> None:
        import llama_cpp.llama_cpp as lc

        self.active = False
        self.layers: dict[int, np.ndarray] = {}  # layer -> (heads, tokens, cells)

        def observe(ptr: int, ask: bool, _user: int) -> bool:
            if not self.active:
                return False
            t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
            q, k = t.src[0], t.src[1]
            if not (q and k and q.contents.name.startswith(b"Qcur-") and k.contents.name.startswith(b"cache_k_l")):
                return False
            if ask:
                return True
            layer = int(k.contents.name[len(b"cache_k_l"):].split(b" ")[0])
            qa, ka = _array(q.contents)[0], _array(k.contents)[0]  # (heads, tokens, d), (kv heads, cells, d)
            mask = _array(t.src[3].contents)[0, 0]  # (tokens padded, cells)
            scale = ctypes.c_float.from_buffer_copy(ctypes.c_int32(t.op_params[0])).value
            keys = np.repeat(ka, qa.shape[0] // ka.shape[0], axis=0)
            s = np.einsum("htd,hkd->htk", qa, keys) * scale + mask[None, : qa.shape[1], :]
            s -= s.max(-1, keepdims=True)
            w = np.exp(s)
            self.layers[layer] = w / w.sum(-1, keepdims=True)
            return True

        self._callback = lc.ggml_backend_sched_eval_callback(observe)  # kept: llama.cpp holds the pointer
        self._lc = lc

    def install(self) -> object:
        """Make every llama.cpp context created from now on report to this probe; returns the
        original default-params function, to put back once the memory model is loaded."""
        original = self._lc.llama_context_default_params

        def params():  # noqa: ANN202 - ctypes struct
            p = original()
            p.cb_eval = self._callback
            p.cb_eval_user_data = None
            return p

        self._lc.llama_context_default_params = params
        return original


def token_offsets(llm) -> tuple[list[int], bytes]:
    """The byte offset of each token of the memorized prefix, and the prefix's bytes."""
    offsets, text = [], b""
    for tok in llm._prefix_ids:
        offsets.append(len(text))
        text += llm._token_bytes(tok)
    return offsets, text


def _token_chunks(llm, chunks: list[str]) -> np.ndarray:
    """For each token of the memorized prefix, the chunk its line was taken from (-1: none).
    The extractive memory puts each sentence on its own line."""
    offsets, text = token_offsets(llm)
    starts = [0] + [i + 1 for i, b in enumerate(text) if b == 10]
    token_line = np.searchsorted(np.array(starts), np.array(offsets), side="right") - 1
    squashed = [" ".join(c.split()) for c in chunks]
    line_chunk = []
    for line in text.split(b"\n"):
        s = " ".join(line.decode("utf-8", errors="ignore").split())
        line_chunk.append(next((ci for ci, c in enumerate(squashed) if len(s) >= 15 and s in c), -1))
    return np.array(line_chunk)[token_line]


def collect(args: argparse.Namespace) -> None:
    probe = AttentionProbe()
    original = probe.install()
    from memorag.eval import datasets
    from memorag.eval.metrics import retrieved_gold
    from memorag.eval.runner import load_or_memorize
    from memorag.models.packaged import cache_dir
    from memorag.pipeline import MemoRAG
    from memorag.prompts import prompts_for

    pipe = MemoRAG(gen_model_name_or_path="qwen2.5-0.5b", ret_hit=5)
    probe._lc.llama_context_default_params = original
    llm = pipe.memory.llm
    hays = datasets.build("hotpotqa", first_index=args.first_index, limit=args.limit, per_haystack=args.per_haystack,
                          haystack_tokens=32000, seed=args.seed, count_tokens=llm.count_tokens)
    template = prompts_for("en").recall
    q_from = len(llm._tokenize(template.split("{question}")[0], add_bos=False))  # where the question starts
    args.out.mkdir(parents=True, exist_ok=True)
    for hay in hays:
        load_or_memorize(pipe, cache_dir() / "eval", hay, progress=False)
        chunks = [c.text for c in pipe.retriever.chunks]
        token_chunk = _token_chunks(llm, chunks)
        present = sorted({int(c) for c in token_chunk if c >= 0})
        n = len(llm._prefix_ids)
        # (chunks, tokens): 1 where a prefix token belongs to the chunk, so a matrix product
        # sums each head's weights per chunk
        member = (token_chunk[None, :] == np.arange(len(chunks))[:, None]).astype(np.float32)
        memory_text = " ".join(llm._prefix_text().split())
        for q in hay.questions:
            t0 = time.perf_counter()
            suffix = llm._suffix_ids(template.format(question=q.question))
            q_to = q_from + len(llm._tokenize(q.question, add_bos=False))
            rec: dict[str, np.ndarray] = {}
            for mode in ("base", "adapter"):
                llm._truncate_to_prefix()
                llm._apply_adapter(mode == "adapter")
                probe.active, probe.layers = True, {}
                llm._llm.eval(suffix)
                probe.active = False
                llm._apply_adapter(False)
                llm._truncate_to_prefix()
                heads = probe.layers[0].shape[0]
                task = np.zeros((len(chunks), len(probe.layers), heads), np.float32)
                question = np.zeros_like(task)
                for layer, w in probe.layers.items():
                    w = w[:, :, :n]
                    task[:, layer] = member @ w.mean(1).T
                    question[:, layer] = member @ w[:, q_from:q_to].mean(1).T
                rec[f"{mode}_task"], rec[f"{mode}_question"] = task, question
            gold = np.array([retrieved_gold(q.gold, [c]) for c in chunks], dtype=bool)
            # which supporting sentences the memory holds at all (the window keeps an extract)
            in_memory = [[" ".join(s.split()) in memory_text for s in para if s.strip()] for para in q.gold]
            np.savez_compressed(args.out / f"{q.id}.npz", **rec, gold=gold, present=np.array(present),
                                gold_sentences=np.array([len(p) for p in in_memory]),
                                gold_sentences_in_memory=np.array([sum(p) for p in in_memory]))
            print(f"{q.id}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _rrf(rankings: list[list[int]], weights: list[float]) -> list[int]:
    from memorag.retrieval import weighted_rrf

    return [cid for cid, _ in weighted_rrf(rankings, weights)]


def _hit(order: list[int], gold: np.ndarray, k: int = 5) -> tuple[float, float]:
    found = gold[list(order[:k])].any(0)
    return float(found.mean()), float(found.all())


def _attention_order(q: dict, key: str, heads: np.ndarray) -> list[int]:
    m = q[key].reshape(q[key].shape[0], -1)[:, heads].sum(1)
    present = set(q["present"].tolist())
    return [int(c) for c in np.argsort(-m, kind="stable") if int(c) in present]


def _pick_heads(qs: list[dict], key: str, n: int) -> np.ndarray:
    quality = np.zeros(qs[0][key].shape[1] * qs[0][key].shape[2])
    for q in qs:
        m = q[key].reshape(q[key].shape[0], -1)
        top = np.argsort(-m, axis=0, kind="stable")[:5]  # (5, heads)
        quality += q["gold"][top].any(0).mean(-1)  # (heads,): share of gold found in its top 5
    return np.argsort(-quality, kind="stable")[:n]


def summarize(args: argparse.Namespace) -> None:
    judged = {r["id"]: r for p in args.judge_from for r in json.loads(p.read_text())["questions"]}
    sets = []
    for d in args.summarize:
        qs = []
        for f in sorted(d.glob("*.npz")):
            z = np.load(f)
            qs.append({"id": f.stem, **{k: z[k] for k in z.files}})
        sets.append(qs)
    every = [q for qs in sets for q in qs]
    result: dict = {"command": "python " + " ".join(sys.argv), "k": 5, "heads": args.heads,
                    "sets": [str(d) for d in args.summarize],
                    "gold_in_memory": {
                        "supporting_sentences": int(sum(q["gold_sentences"].sum() for q in every)),
                        "in_memory": int(sum(q["gold_sentences_in_memory"].sum() for q in every)),
                        "gold_paragraphs": int(sum(len(q["gold_sentences"]) for q in every)),
                        "paragraphs_wholly_in_memory": int(sum((q["gold_sentences_in_memory"] == q["gold_sentences"]).sum()
                                                               for q in every))},
                    "splits": []}
    for pick, test in ((0, 1), (1, 0)):
        split: dict = {"heads_from": str(args.summarize[pick]), "scored_on": str(args.summarize[test]), "rows": {}}
        for key in ("base_task", "base_question", "adapter_task", "adapter_question"):
            heads = _pick_heads(sets[pick], key, args.heads)
            rows: dict[str, list] = {}
            for q in sets[test]:
                p = judged[q["id"]]
                first = p["first"]
                judge = sorted(first, key=lambda c: -p["judge"].get(str(c), float("-inf")))
                att = _attention_order(q, key, heads)[: len(first)]
                for name, order in (("hybrid", first), ("likelihood (hybrid + judge w2)", _rrf([first, judge], [1, 2])),
                                    ("attention alone", att), ("hybrid + attention", _rrf([first, att], [1, 1])),
                                    ("likelihood + attention", _rrf([first, judge, att], [1, 2, 1]))):
                    rows.setdefault(name, []).append(_hit(order, q["gold"]))
            split["rows"][key] = {name: {"recall": round(float(np.mean([v[0] for v in vals])), 4),
                                         "all_gold": round(float(np.mean([v[1] for v in vals])), 4),
                                         "questions": len(vals)} for name, vals in rows.items()}
            split.setdefault("heads_chosen", {})[key] = [[int(h) // sets[0][0][key].shape[2],
                                                          int(h) % sets[0][0][key].shape[2]] for h in heads]
        result["splits"].append(split)
    args.out.write_text(json.dumps(result, indent=1))
    for split in result["splits"]:
        print(f"heads from {split['heads_from']}, scored on {split['scored_on']}")
        for key, rows in split["rows"].items():
            print("  " + key + ": " + ", ".join(f"{n} {r['recall']}/{r['all_gold']}" for n, r in rows.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_question_set_args(ap)
    ap.add_argument("--out", type=Path, required=True, help="a directory (collect) or the summary JSON")
    ap.add_argument("--summarize", type=Path, nargs=2, default=None,
                    help="two collected directories: heads are picked on each and scored on the other")
    ap.add_argument("--judge-from", type=Path, nargs="*", default=[],
                    help="bench/pointer_study.py files with the same questions' first round and judge scores")
    ap.add_argument("--heads", type=int, default=8)
    args = ap.parse_args()
    if args.summarize:
        summarize(args)
    else:
        collect(args)


if __name__ == "__main__":
    main()
