"""flightc eval: task accuracy or held-out perplexity, float model vs compiled model on a backend."""
from __future__ import annotations


from flightc.cli.backend_options import add_backend_choice
from flightc.cli.render import console, progress, table
from flightc.errors import FlightcError
from flightc.files import write_atomic


def register(sub) -> None:
    from flightc.models.builtin import DEFAULT_MODEL

    e = sub.add_parser("eval", help="task accuracy (addition) or held-out perplexity (pylm) of the float model vs "
                                    "the compiled model on a backend")
    e.add_argument("bundle")
    e.add_argument("--reference", help=f"the float model the bundle was compiled from (default: the model the bundle "
                                       f"names, else {DEFAULT_MODEL})")
    e.add_argument("-n", type=int, help="held-out problems (default 100) or text windows (default 4)")
    e.add_argument("--text", help="a text file: perplexity on it, through the model's tokenizer (any model with "
                                  "one), float vs compiled")
    e.add_argument("--window", type=int, help="--text: tokens per window (default: the bundle's max_len, at most "
                                              "64)")
    e.add_argument("--tokenizer", help="--text: whose tokenizer to use, a folder of tokenizer files or a model "
                                       "(builtin:NAME); default: the model's")
    add_backend_choice(e, help="where the compiled model runs (as for `flightc run`)")
    e.add_argument("--hazard-check", action="store_true", help="also check token ordering on every run (slower)")
    e.add_argument("--json", help="write the results here")
    e.set_defaults(func=cmd_eval)


def _options(args) -> dict:
    """eval skips the token-ordering checks unless --hazard-check asks for them (on a backend that has them)."""
    from flightc.runtime.backends import backend_spec

    spec = backend_spec(args.backend)
    if args.hazard_check:
        spec.check_options({"check_hazards": True})
    return {"check_hazards": args.hazard_check} if "check_hazards" in spec.options else {}


def _perplexity_table(title: str, r) -> None:
    console.print(table(title, ("metric", "value"), [
        (f"perplexity, float model ({r.float_device})", f"{r.float_perplexity:.3f}"),
        (f"perplexity, compiled model ({r.backend})", f"{r.compiled_perplexity:.3f}"),
        ("same top-1 token (teacher-forced)", f"{r.top1_agreement:.1%}"),
        ("logit relative error", f"{r.logit_rel_error:.4f}"), ("wall time", f"{r.wall_s:.1f} s")]))


def _eval_text(args) -> int:
    """Perplexity on a text file of the user's, tokenized as `flightc run --prompt` tokenizes."""
    from pathlib import Path

    from flightc.bundle import load_bundle
    from flightc.evaluate import perplexity
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference
    from flightc.runtime.text import bundle_codec
    from flightc.tasks.text import text_windows

    path = Path(args.text)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FlightcError(f"--text {path}: cannot be read as UTF-8 text ({e})") from None
    bundle = load_bundle(args.bundle)
    window = args.window or min(bundle.max_len, 64)
    if not 2 <= window <= bundle.max_len:
        raise FlightcError(f"--window {window}: must be between 2 and the bundle's max_len {bundle.max_len}")
    codec = bundle_codec(bundle, args.tokenizer)
    windows = text_windows(codec.encode(text), window, args.n if args.n is not None else 4)
    source = args.reference or bundle.manifest.source
    if not source:
        raise FlightcError("the bundle does not name the model it was compiled from; pass --reference MODEL")
    ref = FloatReference(load_torch_model(source))
    with progress() as bar:
        job = bar.add_task(f"windows of {path.name} on {args.backend}", total=len(windows))
        r = perplexity(bundle, ref, windows, args.backend, lambda d, n: bar.update(job, completed=d),
                       **_options(args))
    _perplexity_table(f"{args.bundle}: {r.windows} window{'s' if r.windows != 1 else ''} of {window} tokens of "
                      f"{path.name} ({codec.name} tokenizer)", r)
    if args.json:
        write_atomic(args.json, r.to_json())
    return 0


def cmd_eval(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.evaluate import evaluate, evaluate_text
    from flightc.models.builtin import load_torch_model, model_task
    from flightc.reference.float_ref import FloatReference
    from flightc.tasks.text import TextTask

    if args.n is not None and args.n < 1:
        raise FlightcError(f"-n {args.n}: evaluate at least 1 problem or window")
    if args.text is not None:
        return _eval_text(args)
    from flightc.models.builtin import DEFAULT_MODEL

    bundle = load_bundle(args.bundle)
    args.reference = args.reference or bundle.manifest.source or DEFAULT_MODEL
    task = model_task(args.reference)
    if task is None:
        raise FlightcError(f"{args.reference} declares no task (flightc_task.json): eval needs a checkable task "
                           f"(builtin:addition) or held-out text (builtin:pylm); for this model, give --text FILE "
                           f"(its perplexity on your text)")
    options = _options(args)
    ref = FloatReference(load_torch_model(args.reference))
    if isinstance(task, TextTask):
        n = args.n if args.n is not None else 4
        with progress() as bar:
            job = bar.add_task(f"held-out windows on {args.backend}", total=n)
            r = evaluate_text(bundle, ref, task, n, args.backend, lambda d, n: bar.update(job, completed=d), **options)
        _perplexity_table(f"{args.bundle}: {r.windows} held-out window{'s' if r.windows != 1 else ''}, "
                          f"{r.predicted_tokens} predicted bytes", r)
    else:
        n = args.n if args.n is not None else 100
        with progress() as bar:
            job = bar.add_task(f"evaluating on {args.backend}", total=n)
            r = evaluate(bundle, ref, task, n, args.backend, lambda d, n: bar.update(job, completed=d), **options)
        console.print(table(f"{args.bundle}: {r.problems} held-out addition problems", ("metric", "value"), [
            (f"exact match, float model ({r.float_device})", f"{r.float_exact_match:.1%}"),
            (f"exact match, compiled model ({r.backend})", f"{r.compiled_exact_match:.1%}"),
            ("same answer", f"{r.answer_agreement:.1%}"), ("same digit (greedy)", f"{r.digit_agreement:.1%}"),
            ("teacher-forced token agreement", f"{r.teacher_forced_agreement:.1%}"),
            ("logit relative error", f"{r.logit_rel_error:.4f}"), ("wall time", f"{r.wall_s:.1f} s")]))
    if args.json:
        write_atomic(args.json, r.to_json())
    return 0
