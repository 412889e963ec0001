"""The local embedding backends side by side: PyTorch (sentence-transformers) vs ONNX Runtime fp32 vs
ONNX Runtime int8, measured in ONE run, interleaved batch by batch (the same chunks, rotating order) so a
machine whose load changes during the run penalises every backend alike.

    .venv/bin/python benchmarks/embedding.py [--per-page 3] [--batch 64]

Prints throughput (chunks/s over chunks of ~256 word pieces cut from the Python 3.11 documentation pages
in tests/data/corpora/python-docs-3.11.jsonl.gz), the ratio to torch, and recall@5 on a hand-written set
of questions whose expected page is known, computed with each backend over the same chunks (in memory,
numpy, a page counts as found when one of its chunks is among the first five)."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (question, expected pages): paraphrased, not copied from the page headings.
QUESTIONS: list[tuple[str, tuple[str, ...]]] = [
    ("How do I read and write tar archives that are gzip or bz2 compressed?", ("library/tarfile.html",)),
    ("How can I start a child process, connect to its pipes and get its exit code?", ("library/subprocess.html",)),
    ("How do I time a small snippet of code accurately?", ("library/timeit.html",)),
    ("Which decorator generates __init__ and __repr__ for a class from its fields?",
     ("library/dataclasses.html",)),
    ("How do I compute a SHA-256 digest of some bytes?", ("library/hashlib.html",)),
    ("How can I parse a TOML configuration file?", ("library/tomllib.html",)),
    ("Where does Python get IANA time zone data for datetime?", ("library/zoneinfo.html",)),
    ("How do I find all files matching a wildcard pattern like *.txt?", ("library/glob.html",)),
    ("How do I compare two directories to see which files differ?", ("library/filecmp.html",)),
    ("How do I register a function to run when the interpreter exits?", ("library/atexit.html",)),
    ("How do I dump Python tracebacks when the process crashes with a segmentation fault?",
     ("library/faulthandler.html",)),
    ("How can I find which lines of code allocate the most memory?", ("library/tracemalloc.html",)),
    ("How do I insert into a sorted list while keeping it sorted?", ("library/bisect.html",)),
    ("How do I shuffle a list or pick a random element?", ("library/random.html",)),
    ("Which module has square root and logarithm functions for complex numbers?", ("library/cmath.html",)),
    ("How do I read an INI style configuration file with sections?", ("library/configparser.html",)),
    ("How do I parse command line arguments and sub-commands in a script?",
     ("library/argparse.html", "howto/argparse.html")),
    ("How can I disable automatic garbage collection or inspect collected objects?", ("library/gc.html",)),
    ("How do I keep a reference to an object without keeping it alive?", ("library/weakref.html",)),
    ("How can I map a file into memory and modify it like a bytearray?", ("library/mmap.html",)),
    ("How do I see the bytecode instructions of a function?", ("library/dis.html",)),
    ("How do I serialize a Python object to bytes and load it back?", ("library/pickle.html",)),
    ("How do I run functions in a pool of threads and get futures back?", ("library/concurrent.futures.html",)),
    ("How can two processes share a block of memory directly?", ("library/multiprocessing.shared_memory.html",)),
    ("How do I split a string the way a Unix shell would, respecting quotes?", ("library/shlex.html",)),
    ("How do I schedule events to run at a given time with a generic scheduler?", ("library/sched.html",)),
    ("How do I query and limit the resources such as CPU time a process may use?", ("library/resource.html",)),
    ("How do I print or format the stack trace of an exception?", ("library/traceback.html",)),
    ("How do I issue a deprecation warning and filter warnings?", ("library/warnings.html",)),
    ("How do I read entries from the Unix group database?", ("library/grp.html",)),
    ("How do I call fcntl and ioctl on a file descriptor?", ("library/fcntl.html",)),
    ("How can a program send messages to the Unix system logger?", ("library/syslog.html",)),
    ("How do I read and write keys in the Windows registry?", ("library/winreg.html",)),
    ("How do I play a beep or a WAV sound on Windows?", ("library/winsound.html",)),
    ("How do I add tab completion and history editing to an interactive prompt?", ("library/readline.html",)),
    ("How do I spawn a process inside a pseudo-terminal?", ("library/pty.html",)),
    ("How do I define a set of symbolic names bound to unique constant values?",
     ("library/enum.html", "howto/enum.html")),
    ("How do I check whether an IPv4 address belongs to a network?", ("howto/ipaddress.html",)),
    ("Which runtime mode enables extra checks and warnings during development?", ("library/devmode.html",)),
    ("How do I declare a generic type variable for type hints?", ("library/typing.html",)),
    ("How do I get the signature and parameters of a function at runtime?", ("library/inspect.html",)),
    ("How do I start the Python interpreter and pass arguments to a script?",
     ("tutorial/interpreter.html", "using/cmdline.html")),
    ("Why does 0.1 + 0.2 not equal 0.3 exactly?", ("tutorial/floatingpoint.html",)),
    ("What are the best practices for reading the __annotations__ of an object?", ("howto/annotations.html",)),
    ("How do I write a network client and server with sockets?", ("howto/sockets.html", "library/socket.html")),
    ("How do I compress data with the bzip2 algorithm?", ("library/bz2.html",)),
    ("What changed in Python 3.11, for example faster CPython and exception groups?", ("whatsnew/3.11.html",)),
    ("How do I set and parse HTTP cookies on the server side?", ("library/http.cookies.html",)),
    ("How do I encode or decode quoted-printable data?", ("library/quopri.html",)),
    ("Where is the full grammar specification of the Python language?", ("reference/grammar.html",)),
    ("How do I run a module as a script the way python -m does?", ("library/runpy.html",)),
    ("How do I subtract two dates and format a timestamp?", ("library/datetime.html",)),
    ("Which abstract base classes describe numeric types such as Integral and Real?", ("library/numbers.html",)),
    ("How do I use itemgetter and attrgetter instead of a lambda?", ("library/operator.html",)),
    ("How do I chain iterators or get all permutations of a sequence?", ("library/itertools.html",)),
    ("How do I parse an HTML document and handle start and end tags?", ("library/html.parser.html",)),
    ("How do I make a secure hash with a key (HMAC) or derive a key from a password?",
     ("library/hashlib.html",)),
    ("How do I find the hostname and port and open a TCP connection with the socket module?",
     ("library/socket.html", "howto/sockets.html")),
]


def load_chunks(corpus: Path, per_page: int, width: int) -> tuple[list[str], list[str]]:
    """Cut each page into consecutive windows of `width` word pieces (the model's own tokenizer)."""
    from tokenizers import Tokenizer

    from core.onnx_embedding import shipped_model_dir

    tok = Tokenizer.from_file(str(shipped_model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    texts: list[str] = []
    pages: list[str] = []
    with gzip.open(corpus, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            text = row["text"]
            offsets = [o for o in tok.encode(text, add_special_tokens=False).offsets]
            for k in range(per_page):
                window = offsets[k * width : (k + 1) * width]
                if not window:
                    break
                texts.append(text[window[0][0] : window[-1][1]])
                pages.append(row["page"])
    return texts, pages


def recall_at_5(q_vecs: np.ndarray, c_vecs: np.ndarray, pages: list[str]) -> float:
    scores = q_vecs @ c_vecs.T
    hits = 0
    for qi, (_, expected) in enumerate(QUESTIONS):
        top = np.argsort(-scores[qi])[:5]
        hits += any(pages[i] in expected for i in top)
    return hits / len(QUESTIONS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=ROOT / "tests/data/corpora/python-docs-3.11.jsonl.gz")
    ap.add_argument("--per-page", type=int, default=3, help="chunks taken from the start of each page")
    ap.add_argument("--width", type=int, default=254, help="word pieces per chunk (+2 special tokens = 256)")
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("EAP_HOME", str(Path(tempfile.gettempdir()) / "eap-bench-embedding"))

    import torch

    from core.embedding import local_embedder

    backends = ("torch", "onnx", "onnx-int8")
    t0 = time.perf_counter()
    embedders = {b: local_embedder(b) for b in backends}  # onnx: exported once from the shipped files
    print(f"load + (first-use) export: {time.perf_counter() - t0:.1f} s")
    texts, pages = load_chunks(args.corpus, args.per_page, args.width)
    missing = {p for _, exp in QUESTIONS for p in exp} - set(pages)
    if missing:
        print(f"questions name pages not in the corpus: {sorted(missing)}", file=sys.stderr)
        return 2
    for e in embedders.values():  # warm-up (first-call allocations, lazy init)
        e.embed(texts[: args.batch])
    print(f"{len(texts)} chunks from {len(set(pages))} pages, ~{args.width + 2} word pieces each; batch "
          f"{args.batch}; cores {os.cpu_count()}, torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    spent = dict.fromkeys(backends, 0.0)
    vecs: dict[str, list[np.ndarray]] = {b: [] for b in backends}
    for n, start in enumerate(range(0, len(texts), args.batch)):
        batch = texts[start : start + args.batch]
        order = backends[n % 3 :] + backends[: n % 3]  # rotate who goes first
        for b in order:
            t = time.perf_counter()
            vecs[b].append(embedders[b].embed(batch))
            spent[b] += time.perf_counter() - t
    questions = [q for q, _ in QUESTIONS]
    print(f"\n{'backend':<10} {'chunks/s':>9} {'x torch':>8} {'recall@5':>9} {'loss':>7} {'min cos':>8}")
    ref = np.concatenate(vecs["torch"])
    base_recall = None
    for b in backends:
        c = np.concatenate(vecs[b])
        r = recall_at_5(embedders[b].embed(questions), c, pages)
        base_recall = r if base_recall is None else base_recall
        rate = len(texts) / spent[b]
        print(f"{b:<10} {rate:>9.1f} {spent['torch'] / spent[b]:>8.2f} {r:>9.3f} {base_recall - r:>7.3f} "
              f"{float((c * ref).sum(axis=1).min()):>8.4f}")
    print(f"\n{len(QUESTIONS)} questions; all backends measured in this run, interleaved per batch; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
