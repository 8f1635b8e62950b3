"""The workbench inference engine: HF BERT-family classifiers on `workbench_ext` kernels.

    engine = compile_model(hf_model, quantize=True, sparse_threshold=0.5)
    logits = engine(input_ids, attention_mask)          # np.ndarray [batch, num_labels]
    engine.save("out/engine"); engine = Engine.load("out/engine")
    module = EngineModule(engine)                          # nn.Module; module(**batch).logits

Importing this package also registers the `workbench_runtime` pipeline recipe.
"""
from workbench.runtime.compiler import compile_model  # noqa: F401
from workbench.runtime.engine import FP32_ATOL, Engine  # noqa: F401
from workbench.runtime.read_model import SUPPORTED_ARCHITECTURES, UnsupportedModelError  # noqa: F401
from workbench.runtime.kernels import kernel_report  # noqa: F401
from workbench.runtime.module import EngineModule  # noqa: F401
from workbench.runtime import recipe  # noqa: F401,E402  (registers `workbench_runtime`)

__all__ = ["compile_model", "Engine", "EngineModule", "UnsupportedModelError",
           "SUPPORTED_ARCHITECTURES", "FP32_ATOL", "kernel_report"]
