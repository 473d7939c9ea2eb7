"""Training, checkpoints and inference around MMSegmentation.

Importing this package (or any module in it) registers the project's mmseg components (dataset,
sampler, transform, metric, loss, hook) and allowlists the globals that mmengine checkpoints need under torch's
``weights_only`` loading.
"""

from helpers.data import mmseg_dataset, samplers, transforms  # noqa: F401  (registration)
from helpers.modeling import divergence, hooks, losses, mmseg_metric  # noqa: F401  (registration)
from helpers.modeling.checkpoint import allow_mmengine_checkpoints

allow_mmengine_checkpoints()
