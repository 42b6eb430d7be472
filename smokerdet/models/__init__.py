"""Models as artifacts: building timm models, pretrained weights from the Hub, model folders, the registry of trained models, the ONNX format and export.

Other packages import this one through this module; its modules are listed in
docs/architecture.md.
"""

from smokerdet.models.archs import check_arch
from smokerdet.models.build import (
    DEFAULT_ARCH,
    MAX_INPUT_SIZE,
    MIN_INPUT_SIZE,
    classifier_prefixes,
    create_model,
    load_backbone_state,
    pick_device,
    read_state_dict,
    resolve_data_config,
)
from smokerdet.models.checkpoint import (
    META_FILE,
    LoadedModel,
    ModelMeta,
    check_name,
    lock_files,
    matching_weights,
    model_lock,
    read_meta,
    save_model,
)
from smokerdet.models.export import ExportConfig, ExportError, ExportResult, export_onnx
from smokerdet.models.hub import (
    Backbone,
    cached_file,
    forced_archs,
    forced_import,
    forget_forced,
    hub_repo,
    hub_settings,
    import_forced,
    import_weights,
    is_intact,
    pretrained_file,
    pretrained_provenance,
    pretrained_weights,
    tag_of,
)
from smokerdet.models.info import Info, gather_info
from smokerdet.models.onnx_format import ONNX_FILE
from smokerdet.models.publish import PushResult, ShareError, push_model
from smokerdet.models.registry import (
    SHIPPED_NAME,
    ModelInfo,
    list_models,
    load_model,
    name_stem,
    remove_model,
    reset_default,
    resolve_model,
    set_default,
)
from smokerdet.models.rehearsal import REHEARSAL_FILE, Rehearsal, backbone_sha256
from smokerdet.models.sidecars import FAMILIARITY_FILE, FAMILIARITY_FORMAT

__all__ = [
    "Backbone",
    "DEFAULT_ARCH",
    "FAMILIARITY_FILE",
    "FAMILIARITY_FORMAT",
    "ExportConfig",
    "ExportError",
    "ExportResult",
    "Info",
    "LoadedModel",
    "MAX_INPUT_SIZE",
    "META_FILE",
    "MIN_INPUT_SIZE",
    "ModelInfo",
    "ModelMeta",
    "PushResult",
    "ONNX_FILE",
    "REHEARSAL_FILE",
    "Rehearsal",
    "SHIPPED_NAME",
    "ShareError",
    "backbone_sha256",
    "cached_file",
    "check_arch",
    "check_name",
    "classifier_prefixes",
    "create_model",
    "export_onnx",
    "forced_archs",
    "forced_import",
    "forget_forced",
    "gather_info",
    "hub_repo",
    "hub_settings",
    "import_forced",
    "import_weights",
    "is_intact",
    "list_models",
    "load_backbone_state",
    "load_model",
    "lock_files",
    "matching_weights",
    "name_stem",
    "model_lock",
    "pick_device",
    "pretrained_file",
    "pretrained_provenance",
    "pretrained_weights",
    "push_model",
    "read_meta",
    "read_state_dict",
    "remove_model",
    "reset_default",
    "resolve_data_config",
    "resolve_model",
    "save_model",
    "set_default",
    "tag_of",
]
