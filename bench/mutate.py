#!/usr/bin/env python
"""Mutation check: break the code on purpose, one small change at a time, and see a test fail.

Each mutation is a textual search/replace in one file. For each, the project (``smokerdet/``,
``tests/``, ``examples/``, ``pyproject.toml``) is copied to a temp dir, the change is applied
there (the working tree is never touched), and the mutation's tests run against the copy
(``pytest -x -q`` with ``PYTHONPATH`` on the copy). A mutation is *caught* when a test fails;
it *survives* when they all pass. The old text must occur exactly once in the file: when the
code it targets has moved or changed, the mutation is reported *stale*, to be updated.

First the tests of all selected mutations run once on the unmutated copy (the baseline): a
test that already fails proves nothing about a mutation.

Exit status: 0 when every mutation is caught, 1 otherwise (survived, stale, or a broken run).

To add a mutation, append a ``Mutation`` to ``MUTATIONS``: an id, the file, the old and new
text, the tests to run (files or node ids), and the guarantee it proves the tests hold.

Example:
    python bench/mutate.py                    # all mutations
    python bench/mutate.py --only f1-mean-of-p-and-r --only range-ignored
    python bench/mutate.py --list
    python bench/mutate.py --json bench/results/mutate.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMORY_LIMIT = 8 * 2**30  # address space of each pytest run (and of each process it starts)
COPIED = ("smokerdet", "tests", "examples", "scripts", "pyproject.toml")

# Where the code under each mutation lives: one place to update when a module moves.
METRICS = "smokerdet/metrics.py"  # metrics._f1, binary_metrics, roc_auc
IMAGE_LOADER = "smokerdet/data/images.py"  # images.load_photo
PREDICT = "smokerdet/scoring/predict.py"  # predict._generate
ARCHIVES = "smokerdet/download/archives.py"  # archives._check_member
HTTP = "smokerdet/download/fetch.py"  # fetch._fetch_once
IO = "smokerdet/_io.py"  # atomic_write_bytes
CHECKPOINT = "smokerdet/models/checkpoint.py"  # save_model, lock_holder
RESUME = "smokerdet/training/resume.py"  # write_resume_files, restore_progress, restore_phase
LOOP = "smokerdet/training/loop.py"  # run_epoch
FULL = "smokerdet/training/recipes/full.py"  # fine_tune
ADAPT = "smokerdet/training/recipes/head.py"  # fit_head, adapt_head
ENGINE = "smokerdet/inference/engine.py"  # Engine.run
SERVE = "smokerdet/serving/app.py"  # _build_app, Scorer.run
SERVE_ROW = "tests/serving/test_serve.py::test_the_api_row_is_the_predict_json_row"
ADAPT_TESTS = "tests/training/test_adapt.py"
FAMILIARITY = "smokerdet/inference/familiarity.py"  # fit, load_for, _checked, _sources
EXPORT = "smokerdet/models/export.py"  # export_onnx
FAMILIARITY_TESTS = "tests/inference/test_familiarity.py"
EXPORT_TESTS = "tests/models/test_export.py"
VIDEO = "smokerdet/scoring/video.py"  # video._Reader
VIDEO_TESTS = "tests/scoring/test_video.py"
URLS = "smokerdet/scoring/urls.py"  # urls.redact, urls._read_capped
ROWS = "smokerdet/inference/rows.py"  # Prediction.csv_cells, spreadsheet_safe
PAGE = "smokerdet/static/index.html"  # csvCell
SHARDS = "smokerdet/scoring/shards.py"  # ResultsWriter.append
PROOFS_SERVE = "tests/proofs/test_proofs_serve.py"
PROOFS_ADAPT = "tests/proofs/test_proofs_adapt.py"

KILLS = "tests/proofs/test_reliability.py::test_kills_inside_every_write_leave_old_or_new_and_resume_ends_like_no_kill"
FSYNC = "tests/proofs/test_reliability.py::test_every_file_of_a_save_is_fsynced_under_a_temp_name_then_renamed"
RESUMED = "tests/proofs/test_reliability.py::test_resumed_run_ends_like_an_uninterrupted_one"


@dataclass(frozen=True)
class Mutation:
    """One small breaking change, and the tests that must notice it.

    Attributes:
        id: short, unique, kebab-case.
        file: path relative to the project root.
        old: text that must occur exactly once in ``file``.
        new: what replaces it.
        tests: pytest files or node ids, relative to the project root.
        proves: the guarantee (in docs/reliability.md) the tests hold the code to.
        browser: its tests drive Chromium, which reserves far more address space than
            :data:`MEMORY_LIMIT` at launch: they run without that cap.
    """

    id: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    proves: str
    browser: bool = False


MUTATIONS: list[Mutation] = [
    Mutation(
        id="f1-mean-of-p-and-r",
        file=METRICS,
        old="return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0",
        new="return (precision + recall) / 2",
        tests=("tests/base/test_metrics.py",),
        proves="F1 is the harmonic mean of precision and recall",
    ),
    Mutation(
        id="precision-recall-swapped",
        file=METRICS,
        old="precision=precision,\n        recall=recall,",
        new="precision=recall,\n        recall=precision,",
        tests=("tests/base/test_metrics.py",),
        proves="precision is tp/(tp+fp) and recall tp/(tp+fn), not the other way round",
    ),
    Mutation(
        id="roc-auc-ignores-ties",
        file=METRICS,
        old="ranks[order[k]] = (i + j) / 2 + 1",
        new="ranks[order[k]] = k + 1",
        tests=("tests/base/test_metrics.py",),
        proves="ROC-AUC counts a tied (positive, negative) pair as one half",
    ),
    Mutation(
        id="pixel-cap-removed",
        file=IMAGE_LOADER,
        old="if width * height > max_pixels:",
        new="if False:",
        tests=(
            "tests/proofs/test_hostile.py::test_bomb_is_rejected_fast",
            "tests/data/test_data.py::test_pixel_limit_rejects_before_decoding",
        ),
        proves="a decompression bomb is refused from its header, before any pixel is decoded",
    ),
    Mutation(
        id="exif-transpose-removed",
        file=IMAGE_LOADER,
        old="upright = ImageOps.exif_transpose(im)",
        new="upright = None",
        tests=("tests/data/test_data.py::test_exif_orientation_is_applied",),
        proves="images are scored upright, as their EXIF orientation says",
    ),
    Mutation(
        id="decoder-errors-escape",
        file=IMAGE_LOADER,
        old="except Exception as e:  # the decoders raise many types",
        new="except ImportError as e:  # the decoders raise many types",
        tests=("tests/proofs/test_fuzz.py::test_loader_property_random_and_mutated_bytes",),
        proves="hostile bytes give an RGB image or ImageLoadError, nothing else",
    ),
    Mutation(
        id="predict-drops-unreadable-row",
        file=PREDICT,
        old="            yield p\n    warn_unfamiliar(*counts)",
        new="            if p.error is None:\n                yield p\n    warn_unfamiliar(*counts)",
        tests=("tests/proofs/test_hostile.py::test_predict_survives_the_corpus_and_escapes_names",),
        proves="every unreadable file becomes one error row: one output line per input path",
    ),
    Mutation(
        id="predict-drops-missing-path-row",
        file=PREDICT,
        old="        if error is not None:\n            yield s.error_row(path, error)",
        new="        if error is not None:\n            continue",
        tests=(
            "tests/scoring/test_predict.py::test_missing_path_and_corrupt_file_in_a_batch_exit_3",
        ),
        proves="a path that does not exist becomes an error row, not a silent gap",
    ),
    Mutation(
        id="draft-size-reported",
        file=IMAGE_LOADER,
        old="return Photo(rgb, width, height)",
        new="return Photo(rgb, *rgb.size)",
        tests=(
            "tests/data/test_data.py::test_a_photo_keeps_its_own_upright_size_when_decoded_at_reduced_scale",
            SERVE_ROW,
        ),
        proves="a row's width and height are the photo's own, not the size of a JPEG draft",
    ),
    Mutation(
        id="tta-mirror-not-flipped-back",
        file=ENGINE,
        old="a[n:, ..., ::-1]",
        new="a[n:]",
        tests=(
            "tests/inference/test_engine.py::test_flip_tta_averages_the_photo_and_its_mirror_once",
        ),
        proves="flip TTA averages each map with its mirror's flipped back, on every backend",
    ),
    Mutation(
        id="api-row-without-familiarity",
        file=SERVE,
        old="scorer = Scorer(engine, config, load_for(engine))",
        new="scorer = Scorer(engine, config)",
        tests=(SERVE_ROW,),
        proves="serve answers each photo with the row of predict --json, familiarity included",
    ),
    Mutation(
        id="archive-accepts-dotdot",
        file=ARCHIVES,
        old='if ".." in pure.parts:',
        new="if False:",
        tests=("tests/download/test_download.py::test_hostile_zips_write_nothing_at_all",),
        proves="an archive member with '..' in its path (zip-slip) is refused",
    ),
    Mutation(
        id="range-ignored",
        file=HTTP,
        old='req.add_header("Range", f"bytes={have}-")',
        new="pass",
        tests=("tests/download/test_download.py::test_dropped_connection_resumes_with_range",),
        proves="an interrupted download resumes with an HTTP Range request",
    ),
    Mutation(
        id="range-ignored-server",
        file=HTTP,
        old="if have and resp.status != 206:",
        new="if False:",
        tests=(
            "tests/download/test_download.py::test_a_server_ignoring_range_gets_the_whole_file_once",
        ),
        proves="a server that ignores Range (200, whole body) does not get its bytes appended",
    ),
    Mutation(
        id="model-json-written-in-place",
        file=IO,
        old='fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)',
        new=(
            'fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)\n'
            '    if path.name == "model.json":  # mutant: truncate and write the file itself\n'
            "        os.close(fd)\n"
            "        os.unlink(tmp)\n"
            "        fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)"
        ),
        tests=(KILLS,),
        proves="model.json is replaced by a rename: a kill leaves the old file or the new one",
    ),
    Mutation(
        id="weights-not-fsynced",
        file=IO,
        old="os.fsync(f.fileno())",
        new='os.fsync(f.fileno()) if path.suffix != ".safetensors" else None',
        tests=(FSYNC,),
        proves="the weights reach the disk before they are renamed into place (power cuts)",
    ),
    Mutation(
        id="weights-written-in-place",
        file=IO,
        old='fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)',
        new=(
            'fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)\n'
            '    if path.suffix == ".safetensors":  # mutant: no temp file, no rename\n'
            "        os.close(fd)\n"
            "        os.unlink(tmp)\n"
            "        fd, tmp = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path)"
        ),
        tests=(FSYNC,),
        proves="the weights appear only by renaming a complete, fsynced temp file",
    ),
    Mutation(
        id="previous-weights-not-kept",
        file=CHECKPOINT,
        old="os.replace(current, previous)",
        new="pass",
        tests=(KILLS,),
        proves="the old weights stay until the new model.json is in place (old or new, no mix)",
    ),
    Mutation(
        id="save-sets-aside-unvouched-weights",
        file=CHECKPOINT,
        old="if _current_is_vouched_for(folder):",
        new="if current.exists() and (folder / META_FILE).exists():",
        tests=(KILLS,),
        proves="a save after an interrupted one keeps the weights model.json vouches for",
    ),
    Mutation(
        id="resume-json-before-tensors",
        file=RESUME,
        old=(
            "atomic_write_bytes(target / tensors_file, blob)\n"
            '        atomic_write_json(target / "state.json", info)'
        ),
        new=(
            'atomic_write_json(target / "state.json", info)\n'
            "        atomic_write_bytes(target / tensors_file, blob)"
        ),
        tests=(KILLS,),
        proves="state.json never names a tensors file that is not complete",
    ),
    Mutation(
        id="ema-restore-skipped",
        file=RESUME,
        old='_load_prefixed(state.ema, saved.tensors, "ema.")',
        new="pass",
        tests=(RESUMED,),
        proves="a resumed run continues the EMA of the weights, not a fresh one",
    ),
    Mutation(
        id="optimizer-restore-skipped",
        file=RESUME,
        old=(
            "state.optimizer.load_state_dict(\n"
            '        {"state": opt_state, "param_groups": saved.json["optimizer_param_groups"]}\n'
            "    )"
        ),
        new="pass",
        tests=(RESUMED,),
        proves="a resumed run continues the optimizer's moments, not fresh ones",
    ),
    Mutation(
        id="scheduler-restore-skipped",
        file=RESUME,
        old='state.scheduler.load_state_dict({**saved.json["scheduler"], "lr_lambdas": [None]})',
        new="pass",
        tests=(RESUMED,),
        proves="a resumed run continues the learning-rate schedule where it was",
    ),
    Mutation(
        id="sampler-reseed-skipped",
        file=LOOP,
        old="data.train_loader.generator.manual_seed(cfg.seed * 1000 + epoch)",
        new="pass",
        tests=(RESUMED,),
        proves="a resumed epoch shuffles the training images as the uninterrupted run did",
    ),
    Mutation(
        id="rng-reseed-skipped",
        file=LOOP,
        old="seed_everything(cfg.seed * 1000 + epoch + 1_000_003 * state.world.rank)",
        new="pass",
        tests=(RESUMED,),
        proves="a resumed epoch draws the same augmentations as the uninterrupted run did",
    ),
    Mutation(
        id="resume-retrains-from-scratch",
        file=RESUME,
        old="state.epoch = saved.epoch",
        new="state.epoch = 0",
        tests=(RESUMED,),
        proves="a resumed run runs only the epochs left, not all of them again",
    ),
    Mutation(
        id="run-finished-before-its-familiarity",
        file=FULL,
        old=(
            "        if distributed.current().is_main:\n"
            "            artifacts.finish(folder, splits, run.state.history)\n"
            "        loop.end_run(folder)"
        ),
        new=(
            "        loop.end_run(folder)\n"
            "        if distributed.current().is_main:\n"
            "            artifacts.finish(folder, splits, run.state.history)"
        ),
        tests=(
            "tests/proofs/test_reliability.py::test_a_run_killed_while_it_finishes_its_folder_is_finished_by_resume",
        ),
        proves="a run killed while it writes its familiarity stats is not finished: resume "
        "writes them",
    ),
    Mutation(
        id="last-epoch-leaves-no-resume-state",
        file=LOOP,
        old="        if state.world.is_main:\n            write_resume_state(state)",
        new="        if state.world.is_main and state.epoch < phase.last:\n"
        "            write_resume_state(state)",
        tests=(
            "tests/proofs/test_reliability.py::test_a_run_killed_while_it_finishes_its_folder_is_finished_by_resume",
        ),
        proves="the last epoch leaves a resume state too, until the folder is finished",
    ),
    Mutation(
        id="remove-blind-to-a-live-run",
        file=CHECKPOINT,
        old="    if not lock_file.exists():\n        return None",
        new="    return None",
        tests=(
            "tests/proofs/test_reliability.py::test_models_remove_refuses_while_another_process_trains_it",
        ),
        proves="`models remove` refuses a model whose lock a live training run holds",
    ),
    Mutation(
        id="head-model-built-in-place",
        file=ADAPT,
        old="        meta, metrics, record = adapt_head(cfg, building, splits)\n"
        "        publish(building, folder)",
        new="        meta, metrics, record = adapt_head(cfg, folder, splits)",
        tests=(
            f"{ADAPT_TESTS}::test_a_head_run_killed_before_its_familiarity_stats_leaves_no_model",
        ),
        proves="a head run killed before its familiarity stats are written leaves no model",
    ),
    Mutation(
        id="adapt-forgets-rehearsal",
        file=ADAPT,
        old="loss = loss + rehearsal_weight * bce(reh[0] @ w + b, reh[1])",
        new="pass",
        tests=(
            f"{ADAPT_TESTS}::test_rehearsal_keeps_what_the_model_knew_while_few_photos_move_the_head",
        ),
        proves="the head refitted on few photos rehearses the original training photos",
    ),
    Mutation(
        id="adapt-no-pull",
        file=ADAPT,
        old="strength = pull / max(len(ys), 1)",
        new="strength = 0.0",
        tests=(f"{ADAPT_TESTS}::test_a_strong_pull_leaves_the_head_where_it_was",),
        proves="the refitted head is pulled towards the old one",
    ),
    Mutation(
        id="adapt-metrics-in-sample",
        file=ADAPT,
        old="oof = cross_validate_head(site.x, site.y, start, rows, fold)",
        new="oof = fit_head(site.x, site.y, start, rows).probs(site.x)",
        tests=(
            f"{ADAPT_TESTS}::test_expected_accuracy_is_the_out_of_fold_scores_at_the_recipe_threshold",
        ),
        proves="the site's expected accuracy comes from out-of-fold scores, not in-sample ones",
    ),
    Mutation(
        id="adapt-moves-the-backbone",
        file=ADAPT,
        old="classifier.bias.fill_(head.bias)",
        new="classifier.bias.fill_(head.bias)\n        next(init.model.parameters()).add_(1e-3)",
        tests=(
            f"{ADAPT_TESTS}::test_head_recipe_refits_only_the_head_and_cross_validates_the_threshold",
        ),
        proves="head-only adaptation leaves every backbone tensor as it was",
    ),
    Mutation(
        id="familiarity-of-other-weights-used",
        file=FAMILIARITY,
        old="    if stats.weights_sha256 != ours:\n",
        new="    if False:\n",
        tests=(
            f"{EXPORT_TESTS}::test_stats_of_other_weights_in_the_onnx_file_are_one_note_and_no_familiarity",
            f"{FAMILIARITY_TESTS}::test_stats_file_of_other_weights_is_refused",
        ),
        proves="familiarity stats of other weights, inside the ONNX file or beside it, are "
        "named in one note and never used",
    ),
    Mutation(
        id="familiarity-inside-the-file-ignored",
        file=FAMILIARITY,
        old="    if field in engine.metadata:\n",
        new="    if False:\n",
        tests=(f"{EXPORT_TESTS}::test_an_exported_file_copied_alone_keeps_its_familiarity",),
        proves="an exported .onnx file alone gives familiarity scores, from the stats it carries",
    ),
    Mutation(
        id="export-carries-no-familiarity",
        file=EXPORT,
        old="{**metadata_for(loaded.meta, head), **found.props}",
        new="metadata_for(loaded.meta, head)",
        tests=(f"{EXPORT_TESTS}::test_an_exported_file_copied_alone_keeps_its_familiarity",),
        proves="an exported .onnx file carries its model's familiarity stats",
    ),
    Mutation(
        id="few-photos-get-no-familiarity",
        file=FAMILIARITY,
        old="MIN_PHOTOS = 2\n",
        new="MIN_PHOTOS = 8\n",
        tests=(f"{FAMILIARITY_TESTS}::test_a_model_trained_on_few_photos_has_familiarity_stats",),
        proves="a model trained on few photos still has familiarity stats",
    ),
    Mutation(
        id="few-photos-calibrated-in-sample",
        file=FAMILIARITY,
        old="distances = stats.distance(raw) * n / (n - 1)",
        new="distances = stats.distance(raw)",
        tests=(
            f"{FAMILIARITY_TESTS}::test_few_photos_get_isotropic_stats_calibrated_leave_one_out",
        ),
        proves="without validation photos, few training photos calibrate the cut leave-one-out",
    ),
    Mutation(
        id="torchrun-exit-through-interpreter-shutdown",
        file="smokerdet/distributed.py",
        old="    return _joined\n",
        new="    return False\n",
        tests=(
            "tests/training/test_distributed.py::test_a_process_that_joined_a_group_ends_without_the_interpreter_shutdown",
        ),
        proves="a process that joined a process group ends without the interpreter's shutdown, "
        "where DDP's leftover gloo threads can abort a finished run",
    ),
    Mutation(
        id="video-wanted-frame-skipped-as-unreferenced",
        file=VIDEO,
        old='codec.skip_frame = "NONREF" if i < len(packets) - 1 else "DEFAULT"',
        new='codec.skip_frame = "NONREF"',
        tests=(f"{VIDEO_TESTS}::test_b_frames_and_long_groups_of_pictures_are_sampled_right",),
        proves="a sampled video frame is the first at or after its time, B-frames included",
    ),
    Mutation(
        id="video-decodes-every-frame",
        file=VIDEO,
        old="wanted = self.sampler.due(self.last_packet)",
        new="wanted = True",
        tests=(
            f"{VIDEO_TESTS}::test_low_rates_decode_only_what_they_need_and_get_the_same_pictures",
        ),
        proves="low sampling rates do not decode every frame",
    ),
    Mutation(
        id="video-rotation-ignored",
        file=VIDEO,
        old="upright(rgb(frame, self.max_side), frame.rotation)",
        new="rgb(frame, self.max_side)",
        tests=(VIDEO_TESTS,),
        proves="a phone video's display matrix is applied",
    ),
    Mutation(
        id="event-threshold-strict",
        file="smokerdet/scoring/events.py",
        old="        if probability >= self.rules.threshold:\n",
        new="        if probability > self.rules.threshold:\n",
        tests=("tests/scoring/test_events.py",),
        proves="a frame at the threshold counts as smoking, like a photo's label",
    ),
    Mutation(
        id="snapshot-declared-size-trusted",
        file=URLS,
        old="if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:",
        new="if False:",
        tests=("tests/scoring/test_urls.py::test_a_2gb_body_is_refused_without_reading_it",),
        proves="a snapshot whose Content-Length is over the cap is refused before its body",
    ),
    Mutation(
        id="credentials-shown",
        file=URLS,
        old='text = _USERINFO.sub(r"\\g<scheme>***@", text)',
        new="pass",
        tests=("tests/scoring/test_urls.py", "tests/scoring/test_streams.py"),
        proves="credentials in a URL never appear in a message or a log",
    ),
    Mutation(
        id="stream-drops-not-counted",
        file="smokerdet/scoring/streams.py",
        old="            if self._latest is not None:\n                self.stats.dropped += 1\n",
        new="",
        tests=(
            "tests/scoring/test_streams.py::test_a_snapshot_url_is_polled_and_a_slow_scorer_drops_frames_not_memory",
        ),
        proves="frames replaced while scoring lags are counted as dropped",
    ),
    Mutation(
        id="webhook-retries-a-404",
        file="smokerdet/scoring/webhooks.py",
        old="return e.code in RETRY_STATUSES,",
        new="return True,",
        tests=("tests/scoring/test_webhooks.py",),
        proves="a webhook answer that will not change (404) is not retried",
    ),
    Mutation(
        id="backoff-jitter-past-the-cap",
        file="smokerdet/scoring/backoff.py",
        old="return min(self.cap, base * spread)",
        new="return base * spread",
        tests=(
            "tests/scoring/test_webhooks.py::test_backoff_grows_is_capped_and_jitters_within_its_bounds",
        ),
        proves="reconnection and retry waits never exceed the cap, jitter included",
    ),
    Mutation(
        id="imported-weights-head-unchecked",
        file="smokerdet/download/downloads.py",
        old="            if shape != expected:",
        new="            if False:",
        tests=(
            "tests/download/test_download.py::test_a_smokerdet_model_is_not_imported_as_imagenet_weights",
        ),
        proves="a file imported as ImageNet weights must have an ImageNet classifier head: a "
        "smokerdet model (one-logit head) is refused without --force",
    ),
    Mutation(
        id="pulled-model-sha256-unchecked",
        file="smokerdet/models/share.py",
        old="        if sha256_file(path) != sha:",
        new="        if False:",
        tests=("tests/models/test_share.py::test_a_tampered_download_is_refused_and_removed",),
        proves="a file pulled from the Hub that does not match its SHA-256 in smokerdet.json is "
        "refused, removed from the cache and never used",
    ),
    Mutation(
        id="eval-blind-to-training-photos",
        file="smokerdet/scoring/evaluate.py",
        old="        fit = sum(r in tp.TRAINED for r in roles)",
        new="        fit = 0",
        tests=(
            "tests/training/test_train_eval.py::test_eval_recognises_training_photos_by_content",
        ),
        proves="eval counts the photos a model trained on, by content, and says so",
    ),
    Mutation(
        id="locks-beside-the-models",
        file=CHECKPOINT,
        old="    locks = locks_dir()",
        new="    locks = folder.parent",
        tests=(
            "tests/cli/test_models_cli.py::"
            "test_training_never_changes_the_default_and_says_how_to_use_the_model",
        ),
        proves="a training run leaves no lock or pid file in the models folder",
    ),
    Mutation(
        id="remove-the-default-unasked",
        file="smokerdet/models/registry.py",
        old="    if info.is_default and not default_too:",
        new="    if False:",
        tests=(
            "tests/cli/test_models_cli.py::test_remove_the_default_goes_back_to_the_shipped_model",
        ),
        proves="`models remove` keeps the default model without --yes",
    ),
    Mutation(
        id="stdin-nul-as-one-line",
        file=PREDICT,
        old='    if "\\0" in text:',
        new="    if False:",
        tests=(
            "tests/scoring/test_predict.py::test_nul_separated_paths_from_stdin_keep_odd_names_whole",
        ),
        proves="`find -print0 | smokerdet predict -` reads each NUL-separated path",
    ),
    # --- issue #23: the newer surfaces (serve, adaptation, rehearsal, results files) --------
    Mutation(
        id="token-prefix-accepted",
        file="smokerdet/telemetry.py",
        old="hmac.compare_digest(value.encode(), token.encode())",
        new="token.encode().startswith(value.encode())",
        tests=(f"{PROOFS_SERVE}::test_only_the_whole_token_opens_the_api",),
        proves="only the whole token opens the API: an empty or partial bearer gets 401",
    ),
    Mutation(
        id="token-scheme-ignored",
        file="smokerdet/telemetry.py",
        old='scheme.lower() == "bearer" and ',
        new="",
        tests=(f"{PROOFS_SERVE}::test_only_the_whole_token_opens_the_api",),
        proves="the token counts only as a Bearer credential",
    ),
    Mutation(
        id="threshold-zero-ignored",
        file=SERVE,
        old="cut = engine.meta.threshold if threshold is None else threshold",
        new="cut = threshold or engine.meta.threshold",
        tests=(f"{PROOFS_SERVE}::test_threshold_zero_and_one_are_used_as_sent",),
        proves="?threshold=0 and ?threshold=1 are used as sent",
    ),
    Mutation(
        id="model-info-leaks-local-paths",
        file=SERVE,
        old='_META_HIDDEN = ("train_args", "data_fingerprint", "provenance")',
        new='_META_HIDDEN = ("train_args",)',
        tests=(f"{PROOFS_SERVE}::test_model_endpoint_carries_no_local_path",),
        proves="GET /v1/model carries no local path",
    ),
    Mutation(
        id="serve-ignores-chosen-default",
        file=SERVE,
        old="engine = open_engine(config.model, device=config.device)\n    app = create_app",
        new='engine = open_engine(config.model or "default", device=config.device)\n'
        "    app = create_app",
        tests=(f"{PROOFS_SERVE}::test_serve_without_model_answers_with_the_chosen_default",),
        proves="serve without --model answers with the model chosen by `models default`",
    ),
    Mutation(
        id="predict-csv-formula-cells",
        file=ROWS,
        old="return [spreadsheet_safe(getattr(self, k)) for k in columns(heatmaps, events)]",
        new="return [getattr(self, k) for k in columns(heatmaps, events)]",
        tests=(f"{PROOFS_SERVE}::test_predict_csv_cells_cannot_start_a_formula",),
        proves="predict --csv: a cell that could start a formula begins with '",
    ),
    Mutation(
        id="page-csv-quoting-only",
        file=PAGE,
        old="""if (typeof v === "string" && /^[=+\\-@\\t\\r]/.test(s)) s = "'" + s;""",
        new="""if (/^[=+\\-@]/.test(s)) return '"' + s.replace(/"/g, '""') + '"';""",
        tests=(f"{PROOFS_SERVE}::test_page_csv_download_cells_cannot_start_a_formula",),
        proves="the page's CSV download: a cell that could start a formula begins with '",
        browser=True,
    ),
    Mutation(
        id="oof-scored-in-sample",
        file=ADAPT,
        old="head = fit_head(x[~held], y[~held], start, rehearsal, **kwargs)",
        new="head = fit_head(x, y, start, rehearsal, **kwargs)",
        tests=(
            f"{PROOFS_ADAPT}::test_a_photo_s_out_of_fold_score_ignores_its_own_label",
            f"{PROOFS_ADAPT}::test_out_of_fold_accuracy_on_labels_without_signal_is_near_chance",
        ),
        proves="a site photo's expected-accuracy score comes from a head that never saw it",
    ),
    Mutation(
        id="site-test-folder-fitted",
        file=ADAPT,
        old="*(splits.test if carved else [])]",
        new="*splits.test]",
        tests=(f"{PROOFS_ADAPT}::test_a_site_s_test_folder_is_never_fitted_and_cv_is_obeyed",),
        proves="a site's own test/ folder is never fitted (eval --split test stays clean)",
    ),
    Mutation(
        id="head-class-weights-dropped",
        file=ADAPT,
        old="loss = bce(xs @ w + b, ys, weight=balance)",
        new="loss = bce(xs @ w + b, ys)",
        tests=(f"{PROOFS_ADAPT}::test_the_head_fit_weighs_both_classes_equally",),
        proves="the head fit weighs both classes equally (an unbalanced site keeps its recall)",
    ),
    Mutation(
        id="head-cv-ignored",
        file=ADAPT,
        old="k = requested or min(MAX_FOLDS, *class_counts(samples).values())",
        new="k = min(MAX_FOLDS, *class_counts(samples).values())",
        tests=(f"{PROOFS_ADAPT}::test_a_site_s_test_folder_is_never_fitted_and_cv_is_obeyed",),
        proves="--cv K sets the head recipe's folds",
    ),
    Mutation(
        id="rehearsal-labels-shifted",
        file=FAMILIARITY,
        old="labels = np.asarray(train_labels)[kept]",
        new="labels = np.asarray(train_labels)[: len(kept)]",
        tests=(f"{PROOFS_ADAPT}::test_an_unreadable_training_photo_shifts_no_rehearsal_label",),
        proves="each rehearsal row keeps its own photo's label when a photo is unreadable",
    ),
    Mutation(
        id="rehearsal-not-carried",
        file=ADAPT,
        old="    if rows is not None:\n        atomic_write_bytes(folder / REHEARSAL_FILE",
        new="    if False:\n        atomic_write_bytes(folder / REHEARSAL_FILE",
        tests=(f"{PROOFS_ADAPT}::test_re_adapting_an_adapted_model_keeps_its_rehearsal_rows",),
        proves="an adapted model keeps its rehearsal rows for the next adaptation",
    ),
    Mutation(
        id="adapted-backbone-not-recorded",
        file=ADAPT,
        old='"backbone_weights_sha256": backbone_sha256(init.meta),',
        new='"backbone_weights_sha256": init.meta.weights_sha256,',
        tests=(f"{PROOFS_ADAPT}::test_re_adapting_an_adapted_model_keeps_its_rehearsal_rows",),
        proves="a model adapted twice still records the backbone its rehearsal rows belong to",
    ),
    Mutation(
        id="results-append-not-fsynced",
        file=SHARDS,
        old="        os.fsync(self._fd)\n\n    def close",
        new="\n    def close",
        tests=(
            "tests/proofs/test_proofs_shards.py::test_every_results_append_is_fsynced_before_the_next",
        ),
        proves="every results append is on disk before the next one starts",
    ),
]


@dataclass
class Outcome:
    id: str
    status: str  # caught, survived, stale, broken
    seconds: float
    detail: str


def copy_project(dest: Path) -> None:
    """Copy what the tests need, without caches, into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(src, dest / name)


def _cap_memory() -> None:
    """In the pytest child: a mutant that allocates without bound gets MemoryError (a failed
    test) instead of taking the machine's memory until the kernel's OOM killer steps in."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_pytest(
    copy: Path, tests: list[str], timeout: float, capped: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        return subprocess.run(
            cmd,
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_cap_memory if capped else None,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, out + f"\ntimed out after {timeout:.0f}s", "")


def first_failure(output: str) -> str:
    """The first ``FAILED``/``ERROR`` line of pytest's summary, or its last line."""
    lines = output.strip().splitlines()
    for line in lines:
        if line.startswith(("FAILED ", "ERROR ")):
            return line[:160]
    return lines[-1][:160] if lines else ""


def check_import_path(copy: Path) -> None:
    """The copy's package must be the one imported, or every mutation would 'survive'."""
    env = {**os.environ, "PYTHONPATH": str(copy)}
    got = subprocess.run(
        [sys.executable, "-c", "import smokerdet; print(smokerdet.__file__)"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not got.startswith(str(copy)):
        sys.exit(f"mutate: the copy's smokerdet is not the one imported (got {got!r})")


def apply(m: Mutation, copy: Path) -> str | None:
    """Apply ``m`` in ``copy``; return why it cannot be applied, or None."""
    target = copy / m.file
    if not target.is_file():
        return f"{m.file} does not exist"
    text = target.read_text(encoding="utf-8")
    n = text.count(m.old)
    if n != 1:
        return f"old text found {n} times in {m.file} (expected once)"
    target.write_text(text.replace(m.old, m.new), encoding="utf-8")
    return None


def run_one(m: Mutation, timeout: float) -> Outcome:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"mutate-{m.id}-") as tmp:
        copy = Path(tmp)
        copy_project(copy)
        why = apply(m, copy)
        if why:
            return Outcome(m.id, "stale", 0.0, why)
        done = run_pytest(copy, list(m.tests), timeout, capped=not m.browser)
    seconds = time.perf_counter() - t0
    detail = first_failure(done.stdout + done.stderr)
    if done.returncode == 0:
        return Outcome(m.id, "survived", seconds, "all tests passed")
    if done.returncode == 1:  # pytest: tests ran and some failed
        return Outcome(m.id, "caught", seconds, detail)
    # 2-5: interrupted, internal error, usage error, no tests collected; -9: timed out
    return Outcome(m.id, "broken", seconds, f"pytest exit {done.returncode}: {detail}")


def baseline(selected: list[Mutation], timeout: float) -> None:
    n = 0
    with tempfile.TemporaryDirectory(prefix="mutate-baseline-") as tmp:
        copy = Path(tmp)
        copy_project(copy)
        check_import_path(copy)
        for browser in (False, True):
            tests = sorted({t for m in selected if m.browser == browser for t in m.tests})
            if not tests:
                continue
            n += len(tests)
            done = run_pytest(copy, tests, timeout * 2, capped=not browser)
            if done.returncode != 0:
                sys.exit(
                    "mutate: the tests fail without any mutation, so they prove nothing:\n"
                    + first_failure(done.stdout + done.stderr)
                )
    print(f"baseline: {n} test targets pass unmutated", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="mutation id (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutation")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    ids = [m.id for m in MUTATIONS]
    if len(set(ids)) != len(ids):
        sys.exit("mutate: duplicate mutation ids")
    unknown = set(args.only) - set(ids)
    if unknown:
        sys.exit(f"mutate: unknown --only {sorted(unknown)}; known: {', '.join(ids)}")
    selected = [m for m in MUTATIONS if not args.only or m.id in args.only]
    if args.list:
        for m in selected:
            print(f"{m.id:<32} {m.file:<26} {m.proves}")
        return
    if not args.no_baseline:
        baseline(selected, args.timeout)

    outcomes = []
    for m in selected:
        o = run_one(m, args.timeout)
        print(f"{o.id:<32} {o.status:<9} {o.seconds:6.1f}s  {o.detail}", file=sys.stderr)
        outcomes.append(o)

    print("| mutation | file | guarantee | result | first failing test |")
    print("|---|---|---|---|---|")
    for m, o in zip(selected, outcomes, strict=True):
        print(f"| `{m.id}` | `{m.file}` | {m.proves} | {o.status} | {o.detail} |")
    bad = [o for o in outcomes if o.status != "caught"]
    print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} mutations caught", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rows = [{**asdict(m), **asdict(o)} for m, o in zip(selected, outcomes, strict=True)]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
