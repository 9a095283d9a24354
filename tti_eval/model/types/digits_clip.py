"""`digits-clip`: a tiny CLIP that tti-eval trains itself on the digits train split, so the demo needs no model hub.

The first load of a `DigitsCLIPModel` trains it (seconds on a CPU) and caches the checkpoint; later loads
reuse it. `"epochs": 0` in a definition gives the same architecture from the same seeded init, untrained
(`digits-clip-random`), as the "before" of the demo's comparison.
"""

import logging
import math
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss

from tti_eval.common.atomic import atomic_write, remove_stale_temp_files
from tti_eval.common.base import Split
from tti_eval.common.errors import TTIEvalError
from tti_eval.common.progress import task
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.base import Dataset
from tti_eval.model.types.open_clip_model import LocalCLIPModel

logger = logging.getLogger("tti_eval")

ARCHITECTURE = "digits-clip"  # tti_eval/model/open_clip_configs/digits-clip.json, registered by open_clip_model
DEFAULT_EPOCHS = 5
GROUPS_PER_STEP = 8  # CLIP batches of one image per class that share a step (and one text forward pass)
LEARNING_RATE = 3e-3
MAX_LOGIT_SCALE = math.log(100)  # open_clip's training clamp on the learned temperature


def training_record(architecture: str, dataset: Dataset | None, epochs: int, seed: int) -> dict[str, Any]:
    """Everything the trained weights depend on; stored in the checkpoint so a changed definition retrains."""
    record: dict[str, Any] = {"architecture": architecture, "epochs": epochs, "seed": seed}
    if epochs > 0:
        if dataset is None:
            raise ValueError("training needs a dataset")
        record |= {
            "dataset": dataset.title,
            "split": dataset.split.value,
            "prompts": dataset.prompts,
            "groups_per_step": GROUPS_PER_STEP,
            "learning_rate": LEARNING_RATE,
        }
    return record


def train_digits_clip(
    checkpoint_path: Path,
    dataset: Dataset | None,
    architecture: str = ARCHITECTURE,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    description: str = "Training digits-clip",
) -> dict[str, Any]:
    """Initialise `architecture` from `seed`, train it contrastively on `dataset` against the dataset's own prompts
    for `epochs` (none: the seeded init is kept), and write `{"state_dict", "training"}` to `checkpoint_path`
    atomically. Returns the training record.

    Training runs on one CPU thread with deterministic algorithms and its own RNG state: the same arguments give the
    same weights on the same machine and software, whatever device the model is later used on, and the caller's
    RNG is left untouched."""
    record = training_record(architecture, dataset, epochs, seed)
    with torch.random.fork_rng(devices=[]), _deterministic_single_thread():
        torch.manual_seed(seed)
        with _without_random_init_warning():
            model, _, transform = open_clip.create_model_and_transforms(architecture)
        if epochs > 0:
            assert dataset is not None  # training_record has checked
            _fit(model, transform, open_clip.get_tokenizer(architecture), dataset, epochs, description)
    state = {"state_dict": model.state_dict(), "training": record}
    atomic_write(checkpoint_path, lambda handle: torch.save(state, handle))
    return record


def _fit(model: torch.nn.Module, transform, tokenizer, dataset: Dataset, epochs: int, description: str) -> None:
    """CLIP's contrastive objective with open_clip's `ClipLoss`, on batches built for only C distinct prompts.

    A random batch would pair many images with the same prompt, and ClipLoss would then push an image away from its
    own class's text. So each step draws GROUPS_PER_STEP groups, each holding one image of every class in class
    order: a group against the C class prompts is an exact CLIP batch (matches on the diagonal, no duplicates), and
    the loss is the mean of ClipLoss over groups. Templates take turns from step to step."""
    items = [dataset.get_image_and_label(i) for i in range(len(dataset))]
    images = torch.stack([transform(image) for image, _ in items])
    labels = torch.tensor([label for _, label in items])
    num_classes = dataset.num_classes
    members = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    steps_per_epoch = min(len(m) for m in members) // GROUPS_PER_STEP
    if steps_per_epoch == 0:
        raise TTIEvalError(
            f"Training on '{dataset.title}' needs at least {GROUPS_PER_STEP} {dataset.split.value} images of every "
            "class; choose a larger dataset in the model's definition."
        )
    prompts = dataset.prompts
    tokens = [tokenizer([prompts[c][t] for c in range(num_classes)]) for t in range(len(dataset.templates))]
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LEARNING_RATE, total_steps=total_steps)
    loss_fn = ClipLoss()
    model.train()
    # kept: the closing line stays on screen as the record that this model was trained here
    with task(description, total_steps, unit="steps", keep=True) as training:
        for step in range(total_steps):
            if step % steps_per_epoch == 0:
                shuffled = [m[torch.randperm(len(m))] for m in members]
            start = (step % steps_per_epoch) * GROUPS_PER_STEP
            groups = torch.stack([s[start : start + GROUPS_PER_STEP] for s in shuffled], dim=1)  # [groups, classes]
            image_features = model.encode_image(images[groups.flatten()], normalize=True)
            text_features = model.encode_text(tokens[step % len(tokens)], normalize=True)
            scale = model.logit_scale.exp()
            loss = torch.stack(
                [loss_fn(group, text_features, scale) for group in image_features.view(*groups.shape, -1)]
            ).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            training.advance(note=f"loss {loss.item():.3f}")
    _recalibrate_batch_norm(model, images)
    model.eval()


def _recalibrate_batch_norm(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> None:
    """Replace BatchNorm running statistics with exact ones of the final weights over the training images.

    After a few fast-moving epochs the running averages still describe earlier weights, which costs the ResNet tower
    a lot of accuracy at eval time; one pass with a cumulative average (momentum None) fixes that."""
    norms = {m: m.momentum for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            model.encode_image(images[start : start + batch_size])
    for norm, momentum in norms.items():
        norm.momentum = momentum


@contextmanager
def _deterministic_single_thread() -> Iterator[None]:
    """Deterministic kernels on one intra-op thread: the tensors are so small that more threads only add overhead
    (7 s of CPU time with one thread against 48 s with two, on a busy 2-core machine)."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@contextmanager
def _without_random_init_warning() -> Iterator[None]:
    """open_clip warns on the root logger whenever a model starts from random weights, which here is the point."""
    quiet = _DropRandomInitWarning()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)


def stored_training_record(checkpoint_path: Path) -> dict[str, Any] | None:
    """The record `train_digits_clip` stored in a checkpoint; None for a missing, unreadable or foreign file."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None
    record = checkpoint.get("training") if isinstance(checkpoint, dict) else None
    return record if isinstance(record, dict) else None


class DigitsCLIPModel(LocalCLIPModel):
    """A `LocalCLIPModel` that trains its own checkpoint when there is none (or when the definition it was trained
    from has changed): `training_dataset`'s train split, `epochs` epochs (0: the untrained seeded init), `seed`."""

    # No `pretrained` (the weights are the ones trained here) and no `model_config_path` (training needs the
    # architecture before LocalCLIPModel would register it): a definition naming either gets a one-sentence error.
    def _setup(self, training_dataset: str = "digits", epochs: int = DEFAULT_EPOCHS, seed: int = 0) -> None:
        # A training killed while writing left a temporary checkpoint; a later load, retraining or not, sweeps it.
        remove_stale_temp_files(self.checkpoint_path.parent, target=self.checkpoint_path.name)
        dataset = DatasetProvider.get_dataset(training_dataset, Split.TRAIN) if epochs > 0 else None
        expected = training_record(self.title_in_source, dataset, epochs, seed)
        reason = self._retrain_reason(expected)
        if reason is not None:
            what = f"training it on {training_dataset} (train split)" if epochs > 0 else "initialising it untrained"
            logger.warning(
                "Model '%s': %s; %s, seed %d, into %s.", self.title, reason, what, seed, self.checkpoint_path
            )
            train_digits_clip(
                self.checkpoint_path, dataset, self.title_in_source, epochs, seed, f"Training {self.title}"
            )
        super()._setup()

    def _retrain_reason(self, expected: dict[str, Any]) -> str | None:
        if not self.checkpoint_path.is_file():
            return "no checkpoint yet"
        stored = stored_training_record(self.checkpoint_path)
        # A checkpoint without a record was not made here (e.g. a user's own file): load it as it is.
        if stored is not None and stored != expected:
            return "its checkpoint was trained from a different definition"
        return None
