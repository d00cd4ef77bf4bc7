"""Train kemdy_tf stage by stage.

    python train.py --stage all                      # synthetic data, small preset (the README's main job)
    python train.py --stage audio --data /data/KEMDy20_v1_1 --workdir runs/kemdy20
    python train.py --stage fusion --manifest my.csv --workdir runs/mine --unfreeze
    python train.py --stage audio --sweep audio.n_layers=1,2,3
    python train.py --stage all --folds 5
    python train.py --preset paper --set audio.n_layers=6 --set train.batch_size=8
    python train.py --recipe real_speech --manifest my.csv --workdir runs/mine
    python train.py --list-recipes                   # the named recipes, one line each

A run's config is the preset, then each --recipe (kemdy_tf/recipes/NAME.json or a JSON
file of that shape), then the --set overrides; it is validated before anything is
written, and run.json records the preset, the recipes and the overrides.

Stages (the registry in kemdy_tf/stages.py): audio (arousal), text (valence), fusion
(emotion), audio_clf / text_clf (single-modality emotion classifiers, the comparison
baselines); `all` runs them in that order. Run the same command again after a kill: each stage resumes from its
last finished epoch; finished stages are skipped (--retrain trains them again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kemdy_tf.logs import quiet_logs  # light: sets TF's C++ log level before TensorFlow loads

DEFAULT_SYNTHETIC = Path("data/synthetic")
DEFAULT_WORKDIR = Path("runs/synthetic")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from kemdy_tf import stages

    p.add_argument("--stage", default=None, choices=[*stages.names(), "all"],
                   help="default: all (a sweep of an audio.*/text.* field: that encoder only)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="a KEMDy20 folder (the real layout)")
    source.add_argument("--manifest", type=Path, help="a CSV manifest (path,text,emotion,...)")
    p.add_argument("--workdir", type=Path, default=None,
                   help=f"run folder (default {DEFAULT_WORKDIR} for the synthetic set)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache (default WORKDIR/../cache)")
    p.add_argument("--preset", default="small", choices=["small", "paper"])
    p.add_argument("--recipe", dest="recipes", action="append", default=[], metavar="NAME|PATH",
                   help="a named partial configuration (see --list-recipes) or a JSON file of one; "
                        "applied after the preset and before --set, in the order given")
    p.add_argument("--list-recipes", action="store_true", help="print the named recipes and exit")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override any config field, e.g. --set audio.n_layers=3 (repeatable)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--strategy", default="default", choices=["default", "mirrored"])
    p.add_argument("--logical-cpus", type=int, default=0,
                   help="split the CPU into N logical devices (to try --strategy mirrored on one machine)")
    p.add_argument("--unfreeze", action="store_true", help="fine-tune the encoders in the fusion stage")
    p.add_argument("--from-scratch", action="store_true",
                   help="fusion without trained encoders (random backbones)")
    p.add_argument("--init-from", type=Path, help="a .keras model to continue training from")
    p.add_argument("--retrain", action="store_true", help="train finished stages again")
    p.add_argument("--sweep", metavar="SECTION.FIELD=V1,V2,...",
                   help="train one model per value into WORKDIR/sweeps/FIELD/VALUE")
    p.add_argument("--folds", type=int, default=0, help="train K session-disjoint folds into WORKDIR/folds")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export after fusion")
    p.add_argument("--export-dir", type=Path, default=Path("saved_models/kemdy"))
    return p.parse_args(argv)


def overrides_of(args) -> list[str]:
    """The --set overrides, then those of --epochs, --batch-size and --seed."""
    overrides = list(args.overrides)
    for flag, field in ((args.epochs, "train.epochs"), (args.batch_size, "train.batch_size"),
                        (args.seed, "train.seed")):
        if flag is not None:
            overrides.append(f"{field}={flag}")
    return overrides


def build_config(args):
    """preset -> recipes -> overrides, validated (config.make_config) before anything is written."""
    from kemdy_tf.config import make_config

    return make_config(args.preset, overrides_of(args), args.recipes)


def made_with(args) -> dict:
    """What run.json records of how the config was made."""
    return {"preset": args.preset, "recipes": list(args.recipes), "overrides": overrides_of(args)}


def list_recipes() -> None:
    from kemdy_tf.config import load_recipe, recipe_names

    for name in recipe_names():
        print(f"{name:<22} {load_recipe(name)['purpose']}")


def resolve_source(args) -> dict:
    if args.manifest:
        return {"manifest": args.manifest}
    if args.data:
        return {"data": args.data}
    from kemdy_tf.data import synthetic

    synthetic.generate(DEFAULT_SYNTHETIC, seed=0)  # a no-op once generated
    return {"data": DEFAULT_SYNTHETIC}


def make_strategy(args):
    import tensorflow as tf

    if args.logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    if args.strategy == "default":
        return None
    devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
              [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    print(f"MirroredStrategy: {strategy.num_replicas_in_sync} replicas on {', '.join(devices)}")
    return strategy


def train(args, config, workdir: Path, strategy) -> None:
    from kemdy_tf import run as run_lib, stages as stages_lib, training

    tokenizer_from = run_lib.find_tokenizer(args.init_from) if args.init_from else None
    # One cache for the whole command: sweeps and folds share it.
    cache_dir = args.cache_dir or (args.workdir or DEFAULT_WORKDIR).parent / "cache"
    run = run_lib.prepare_run(workdir, resolve_source(args), config, cache_dir=cache_dir,
                              tokenizer_from=tokenizer_from, made_with=made_with(args))
    stages = stages_lib.names() if args.stage == "all" else (args.stage,)
    for stage in stages:
        training.train_stage(run, stage, strategy=strategy, unfreeze=args.unfreeze,
                             from_scratch=args.from_scratch, init_from=args.init_from,
                             retrain=args.retrain)
    if "fusion" in stages and not (args.no_export or args.sweep or args.folds):
        from kemdy_tf.export import ExportError, export_run

        try:
            print(f"exported the fusion model for TF Serving to {export_run(workdir, args.export_dir)}")
        except ExportError as err:  # the training itself is done and kept
            print(f"warning: trained, but not exported: {err}", file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(argv)
    quiet_logs()
    if args.list_recipes:
        list_recipes()
        return 0
    from kemdy_tf.config import set_field, validate
    from kemdy_tf import run as run_lib
    from kemdy_tf.run import RunError
    from kemdy_tf.stages import StageError

    args.stage = args.stage or (None if args.sweep else "all")
    workdir = args.workdir or (DEFAULT_WORKDIR if not (args.data or args.manifest) else None)
    if workdir is None:
        print("error: --workdir is required with --data or --manifest", file=sys.stderr)
        return 2
    try:
        config = build_config(args)
        strategy = make_strategy(args)
        if args.sweep:
            field, _, values = args.sweep.partition("=")
            if not values:
                raise ValueError(f"--sweep {args.sweep!r} must look like section.field=v1,v2")
            if args.stage is None:
                section = field.partition(".")[0]
                args.stage = section if section in ("audio", "text") else "all"
            for value in values.split(","):
                swept = build_config(args)
                set_field(swept, field, value)
                validate(swept)
                train(args, swept, workdir / run_lib.SWEEPS_DIR / field / value, strategy)
        elif args.folds:
            for fold in range(args.folds):
                folded = build_config(args)
                folded.data.folds, folded.data.fold = args.folds, fold
                train(args, folded, workdir / run_lib.FOLDS_DIR / f"fold{fold}", strategy)
        else:
            train(args, config, workdir, strategy)
    except (RunError, StageError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
