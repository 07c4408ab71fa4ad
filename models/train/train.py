"""Train a small LLaMA on the samples of ``models.train.prepare``: a plain PyTorch loop.

AdamW, linear warmup then cosine decay to ``--min-lr-ratio``, gradient clipping, batches of
about ``--batch-tokens`` tokens (samples of similar length together, padded with EOS), periodic
held-out loss, checkpoints every ``--ckpt-every`` steps and ``--resume``, a loss curve
(``loss.png``) and a JSONL log (``train_log.jsonl``). The finished model is saved as a Hugging Face
folder (``hf/``, with the run's tokenizer) for ``models.train.export``.

CPU-sized run (about 40 minutes on 2 shared cores; measure first with ``--probe-seconds 60``)::

    python -m models.train.train --run runs/builtin --probe-seconds 60
    nohup python -m models.train.train --run runs/builtin --max-steps 1400 > runs/builtin/train.out 2>&1 &
    python -m models.train.train --run runs/builtin --max-steps 1400 --resume   # after an interruption

Smoke-sized run (seconds)::

    python -m models.train.train --run /tmp/smoke --hidden 64 --layers 2 --heads 4 --intermediate 128 \\
        --max-steps 5 --batch-tokens 2048 --warmup 2 --eval-every 5

Fine-tuning a published TIPO checkpoint (prepare with ``--tokenizer`` that same folder)::

    python -m models.train.train --run runs/ft --init-from path/to/TIPO-200M-ft --lr 1e-4 --max-steps 500

Randomness: the weights come from a local ``torch.Generator`` seeded by ``--seed`` and batch order
from ``random.Random``; the global RNGs are never seeded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tipo.tokens import EOS_ID

__all__ = ["build_model", "iterate_batches", "lr_at", "main"]

IGNORE = -100


def lr_at(step: int, *, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate at a step: linear warmup to ``peak``, then cosine down to ``peak * min_ratio``.

    Example:
        >>> [round(lr_at(s, peak=1.0, warmup=2, total=6, min_ratio=0.1), 3) for s in range(7)]
        [0.5, 1.0, 1.0, 0.868, 0.55, 0.232, 0.1]
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def iterate_batches(lengths: Sequence[int], batch_tokens: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch of batches (lists of row indices), the same for the same ``(seed, epoch)``.

    Rows are shuffled, then sorted by length inside windows of 64 batches' worth, and cut into
    batches whose padded size (rows x longest row) stays within ``batch_tokens``; the batch
    order is shuffled again.

    Example:
        >>> sum(len(b) for b in iterate_batches([5, 9, 3, 7] * 10, 32, seed=0, epoch=0))
        40
    """
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    avg = max(1, sum(lengths) // max(1, len(lengths)))
    window = max(1, 64 * batch_tokens // avg)
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batch: list[int] = []
        longest = 0
        for i in chunk:
            longest_if = max(longest, lengths[i])
            if batch and longest_if * (len(batch) + 1) > batch_tokens:
                batches.append(batch)
                batch, longest_if = [], lengths[i]
            batch.append(i)
            longest = longest_if
        if batch:
            batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(rows: Sequence[dict[str, Any]], completion_only: bool):  # noqa: ANN201
    """Right-padded tensors: input ids (EOS pads), attention mask, labels (-100 where no loss)."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), EOS_ID, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    comp = torch.zeros((len(rows), width), dtype=torch.bool)
    for k, r in enumerate(rows):
        seq = torch.tensor(r["input_ids"], dtype=torch.long)
        n = len(seq)
        ids[k, :n] = seq
        mask[k, :n] = 1
        start = r["prompt_len"] if completion_only else 1
        labels[k, start:n] = seq[start:]
        comp[k, r["prompt_len"]:n] = True
    return ids, mask, labels, comp


def model_config(vocab_size: int, args: argparse.Namespace):  # noqa: ANN201
    from transformers import LlamaConfig

    from models.tokenizer import BOS_ID, PAD_ID

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads or args.heads,
        max_position_embeddings=args.ctx, rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, hidden_act="silu",
        attention_bias=False, mlp_bias=False,
    )


def build_model(vocab_size: int, args: argparse.Namespace):  # noqa: ANN201
    """A fresh LLaMA, weights drawn from a local generator (GPT-2 style: N(0, 0.02), residual
    output projections scaled by 1/sqrt(2 * layers), norms at 1)."""
    import torch
    from transformers import LlamaForCausalLM

    config = model_config(vocab_size, args)
    with torch.random.fork_rng(devices=[]):
        model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(args.seed)
    scaled = ("o_proj.weight", "down_proj.weight")
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                p.fill_(1.0)
                continue
            std = 0.02 / math.sqrt(2 * args.layers) if name.endswith(scaled) else 0.02
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def heldout_loss(model, rows: Sequence[dict[str, Any]], batch_tokens: int) -> dict[str, float]:  # noqa: ANN001
    """Mean next-token loss (nats/token) on held-out rows: all tokens after BOS, and completions only."""
    import torch
    import torch.nn.functional as F

    model.eval()
    sums = {"all": 0.0, "completion": 0.0}
    counts = {"all": 0, "completion": 0}
    lengths = [len(r["input_ids"]) for r in rows]
    with torch.inference_mode():
        for batch in iterate_batches(lengths, batch_tokens, seed=0, epoch=0):
            ids, mask, labels, comp = collate([rows[i] for i in batch], completion_only=False)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                  ignore_index=IGNORE, reduction="none").view(target.shape)
            valid = target != IGNORE
            in_comp = comp[:, 1:] & valid
            sums["all"] += float(nll[valid].sum())
            counts["all"] += int(valid.sum())
            sums["completion"] += float(nll[in_comp].sum())
            counts["completion"] += int(in_comp.sum())
    model.train()
    return {k: sums[k] / max(1, counts[k]) for k in sums}


def plot_curve(log_path: Path, png_path: Path) -> None:
    """Train loss (smoothed) and held-out loss against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    held = [r for r in rows if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        xs = [r["tokens"] / 1e6 for r in train]
        ys = [r["loss"] for r in train]
        smooth, acc = [], None
        for y in ys:
            acc = y if acc is None else 0.95 * acc + 0.05 * y
            smooth.append(acc)
        ax.plot(xs, ys, color="#9ab", lw=0.6, alpha=0.6, label="train (per step)")
        ax.plot(xs, smooth, color="#268", lw=1.5, label="train (smoothed)")
    if held:
        ax.plot([r["tokens"] / 1e6 for r in held], [r["heldout_all"] for r in held], "o-", color="#c63",
                label="held-out, all tokens")
        ax.plot([r["tokens"] / 1e6 for r in held], [r["heldout_completion"] for r in held], "s--", color="#a3a",
                label="held-out, completions")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("tipo-builtin training")
    ax.grid(alpha=0.3)
    ax.legend()
    if train:
        ax.set_ylim(0, min(max(ys[:1] + [3.0]), 9))
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def save_hf(model, run: Path, out: Path) -> None:  # noqa: ANN001
    """The model and the run's tokenizer as one Hugging Face folder."""
    from models.tokenizer import BOS_ID, PAD_ID

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in (run / "tokenizer").iterdir():
        if f.is_file():
            shutil.copy2(f, tmp / f.name)
    gen = {"bos_token_id": BOS_ID, "eos_token_id": EOS_ID, "pad_token_id": PAD_ID}
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m models.train.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--run", type=Path, required=True, help="run folder written by models.train.prepare")
    g = p.add_argument_group("model (ignored with --init-from; --resume keeps the run's model and optimisation "
                             "settings and takes only --max-steps and the run options anew)")
    g.add_argument("--hidden", type=int, default=256)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--heads", type=int, default=4)
    g.add_argument("--kv-heads", type=int, default=0, help="key/value heads (default: = heads)")
    g.add_argument("--intermediate", type=int, default=704)
    g.add_argument("--ctx", type=int, default=1024, help="context length written into the model (default: 1024)")
    g.add_argument("--init-from", type=Path, help="start from this HF LLaMA folder (fine-tuning)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--max-steps", type=int, default=1400)
    o.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per batch (default: 8192)")
    o.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 3e-3)")
    o.add_argument("--min-lr-ratio", type=float, default=0.1)
    o.add_argument("--warmup", type=int, default=100)
    o.add_argument("--weight-decay", type=float, default=0.1)
    o.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (default: 1.0)")
    o.add_argument("--loss", choices=["all", "completion"], default="all",
                   help="train on all tokens after BOS (as TIPO did) or on completions only (default: all)")
    o.add_argument("--seed", type=int, default=0)
    r = p.add_argument_group("run")
    r.add_argument("--eval-every", type=int, default=200, help="held-out loss every N steps (default: 200)")
    r.add_argument("--eval-samples", type=int, default=300, help="held-out rows for the periodic loss (final: all)")
    r.add_argument("--ckpt-every", type=int, default=100)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    r.add_argument("--resume", action="store_true", help="continue from <run>/ckpt/last.pt")
    r.add_argument("--probe-seconds", type=float, default=0,
                   help="train this many seconds, print tokens/s and an estimate for --max-steps, save nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import datasets
    import torch

    from .prepare import Tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    run: Path = args.run
    datasets.disable_progress_bars()
    train_rows = datasets.load_from_disk(str(run / "samples" / "train")).select_columns(["input_ids", "prompt_len"])
    held_rows = datasets.load_from_disk(str(run / "samples" / "heldout")).select_columns(["input_ids", "prompt_len"])
    train_rows, held_rows = list(train_rows), list(held_rows)
    tok = Tokenizer(run / "tokenizer")
    lengths = [len(r["input_ids"]) for r in train_rows]
    probe_rng = random.Random(args.seed)
    eval_rows = held_rows if len(held_rows) <= args.eval_samples else probe_rng.sample(held_rows, args.eval_samples)

    ckpt_path = run / "ckpt" / "last.pt"
    state: dict[str, Any] | None = None
    if args.resume:
        if not ckpt_path.is_file():
            raise SystemExit(f"--resume: no checkpoint at {ckpt_path}; start without --resume")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        saved = state["args"]
        # The run continues as it was configured; only --max-steps and the run controls may change.
        for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "ctx", "seed", "batch_tokens", "loss",
                    "lr", "min_lr_ratio", "warmup", "weight_decay", "clip"):
            setattr(args, key, saved[key])
        args.init_from = Path(saved["init_from"]) if saved.get("init_from") else None

    if args.init_from is not None:
        from transformers import LlamaForCausalLM

        with torch.random.fork_rng(devices=[]):
            model = LlamaForCausalLM.from_pretrained(str(args.init_from), dtype=torch.float32)
        if model.config.vocab_size != tok.vocab_size:
            raise SystemExit(f"{args.init_from} has vocab_size {model.config.vocab_size} but the run's tokenizer has "
                             f"{tok.vocab_size}; prepare the run with --tokenizer {args.init_from}")
    else:
        model = build_model(tok.vocab_size, args)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    step, epoch, pos, tokens_seen, elapsed = 0, 0, 0, 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        tokens_seen, elapsed = state["tokens_seen"], state["elapsed"]
        print(f"resumed at step {step} (epoch {epoch}, batch {pos}, {tokens_seen} tokens, {elapsed / 60:.1f} min)")
    model.train()
    print(f"model: {n_params / 1e6:.2f}M parameters; {len(train_rows)} train rows ({sum(lengths)} tokens), "
          f"{len(held_rows)} held-out rows; threads {torch.get_num_threads()}", flush=True)

    log_path = run / "train_log.jsonl"
    if not args.resume and not args.probe_seconds and log_path.exists():
        log_path.unlink()
    if args.resume and log_path.exists():
        # Steps after the checkpoint were lost with the interrupted run; they are trained again.
        kept = [line for line in log_path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        log_path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def log(entry: dict[str, Any]) -> None:
        if args.probe_seconds:
            return
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def batches() -> Iterator[tuple[int, int, list[int]]]:
        nonlocal_epoch, start = epoch, pos
        while True:
            plan = iterate_batches(lengths, args.batch_tokens, args.seed, nonlocal_epoch)
            for k in range(start, len(plan)):
                yield nonlocal_epoch, k, plan[k]
            nonlocal_epoch, start = nonlocal_epoch + 1, 0

    completion_only = args.loss == "completion"
    t_start = time.perf_counter()
    t_window, tok_window = t_start, 0
    for epoch_now, k, batch in batches():
        if step >= args.max_steps:
            break
        lr = lr_at(step, peak=args.lr, warmup=args.warmup, total=args.max_steps, min_ratio=args.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        ids, mask, labels, _ = collate([train_rows[i] for i in batch], completion_only)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
        opt.step()
        step += 1
        n_tok = int(mask.sum())
        tokens_seen += n_tok
        tok_window += n_tok
        epoch, pos = epoch_now, k + 1
        now = time.perf_counter()
        if args.probe_seconds:
            if now - t_start >= args.probe_seconds:
                rate = tokens_seen / (now - t_start)
                per_step = (now - t_start) / step
                print(f"probe: {step} steps in {now - t_start:.0f}s, {rate:.0f} tokens/s, {per_step:.2f} s/step; "
                      f"{args.max_steps} steps would take about {args.max_steps * per_step / 60:.0f} min "
                      f"({args.max_steps * per_step * rate / 1e6:.2f}M tokens, "
                      f"{args.max_steps * per_step * rate / sum(lengths):.2f} epochs)")
                return 0
            continue
        if step % args.log_every == 0 or step == 1:
            rate = tok_window / max(1e-9, now - t_window)
            t_window, tok_window = now, 0
            total_min = (elapsed + now - t_start) / 60
            print(f"step {step}/{args.max_steps} epoch {epoch} loss {loss.item():.4f} lr {lr:.2e} "
                  f"gnorm {grad_norm:.2f} {rate:.0f} tok/s {total_min:.1f} min", flush=True)
        log({"kind": "train", "step": step, "epoch": epoch, "tokens": tokens_seen, "loss": round(loss.item(), 5),
             "lr": lr, "grad_norm": round(grad_norm, 4), "minutes": round((elapsed + now - t_start) / 60, 3)})
        final = step == args.max_steps
        if step % args.eval_every == 0 or final:
            held = heldout_loss(model, held_rows if final else eval_rows, args.batch_tokens)
            print(f"eval step {step}: held-out loss {held['all']:.4f} (completions {held['completion']:.4f})"
                  + (" [all held-out rows]" if final else f" [{len(eval_rows)} rows]"), flush=True)
            log({"kind": "eval", "step": step, "tokens": tokens_seen, "heldout_all": round(held["all"], 5),
                 "heldout_completion": round(held["completion"], 5), "final": final,
                 "minutes": round((elapsed + time.perf_counter() - t_start) / 60, 3)})
            plot_curve(log_path, run / "loss.png")
        if step % args.ckpt_every == 0 or final:
            _save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "epoch": epoch, "pos": pos,
                "tokens_seen": tokens_seen, "elapsed": elapsed + time.perf_counter() - t_start,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            })
    if args.probe_seconds:
        print("probe: the run ended before the probe time; lower --probe-seconds")
        return 0
    total = elapsed + time.perf_counter() - t_start
    save_hf(model, run, run / "hf")
    rows = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    last_train = [r["loss"] for r in rows if r.get("kind") == "train"][-50:]
    last_eval = [r for r in rows if r.get("kind") == "eval"][-1]
    summary = {
        "parameters": n_params, "steps": step, "epochs": round(tokens_seen / max(1, sum(lengths)), 3),
        "tokens": tokens_seen, "minutes": round(total / 60, 2), "tokens_per_second": round(tokens_seen / max(1e-9, total)),
        "final_train_loss_last50": round(sum(last_train) / max(1, len(last_train)), 4),
        "final_heldout_loss": last_eval["heldout_all"], "final_heldout_completion_loss": last_eval["heldout_completion"],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch_threads": torch.get_num_threads(),
    }
    (run / "train.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"done: {step} steps, {tokens_seen / 1e6:.2f}M tokens in {total / 60:.1f} min; "
          f"held-out loss {last_eval['heldout_all']:.4f}; saved {run / 'hf'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
