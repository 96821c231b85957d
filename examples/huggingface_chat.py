"""Your own chat model class: a Hugging Face checkpoint run by transformers on PyTorch.

ortmodels' own `OnnxChatModel` runs an ONNX export; this example shows the other road the
`BaseLLMModel` interface leaves open: a subclass that supplies only `_load`, `_unload`,
`_generate` and `_stream`, and gets LangChain's interface (invoke, stream, batch, async),
the manager's cache, memory budget and keep-alive, and the call statistics from the base.
It reads the same ``models/<name>/`` checkpoint folder, so no export is needed, at the
cost of PyTorch at run time (the ``[export]`` extra)::

    pip install 'ortmodels[export]'
    ortmodels samples
    python examples/huggingface_chat.py "What is the capital of France?"

Only local files are read (``local_files_only=True``): nothing is fetched from a hub.
torch and transformers are imported in `_load`, so importing this module stays light.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field, PrivateAttr

from ortmodels import BaseLLMModel
from ortmodels.errors import ChatInputError, MissingDependencyError, ModelFileError
from ortmodels.runtime.messages import to_template_messages

logger = logging.getLogger(__name__)

INSTALL = "pip install 'ortmodels[export]'"
_OPTIONS = frozenset({"max_tokens", "temperature"})


def _import_stack() -> tuple[Any, Any]:
    """torch and transformers, or an error that says what to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            f"HuggingFaceChatModel needs torch and transformers ({exc.name} is missing); "
            f"install the export extra: {INSTALL}"
        ) from exc
    return torch, transformers


class HuggingFaceChatModel(BaseLLMModel):
    """Chat with a local Hugging Face checkpoint through transformers' ``generate`` on PyTorch.

    ``ModelManager().get_chat_model("smollm2-135m-instruct", HuggingFaceChatModel)`` builds
    it with the folder, ``MODEL_DEVICE`` and ``MODEL_DTYPE``; ``auto`` means CUDA, else
    Apple's MPS, else the CPU, in float16 on a GPU and float32 on the CPU.
    """

    max_tokens: int = Field(default=256, ge=1)
    """Most new tokens per answer; also a per-call option: ``invoke(..., max_tokens=32)``."""

    temperature: float | None = Field(default=None, ge=0.0)
    """0 is greedy; ``None`` follows the checkpoint's ``generation_config.json``."""

    _tokenizer: Any = PrivateAttr(default=None)
    _model: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "ortmodels-example-huggingface"

    # -- life cycle: called by the base class, once per load ------------------------------------

    def _load(self) -> None:
        torch, transformers = _import_stack()
        folder = self.model_path
        if folder is None or not (folder / "config.json").is_file():
            raise ModelFileError(
                folder, "No Hugging Face checkpoint (config.json) in the model folder",
                "Put a checkpoint there, or run 'ortmodels samples' for smollm2-135m-instruct",
            )
        device, dtype = self._torch_device_and_dtype(torch)
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if not self._tokenizer.chat_template:
            raise ModelFileError(folder, "The tokenizer has no chat template",
                                 "Use an instruct/chat checkpoint (chat_template.jinja or tokenizer_config.json)")
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
        self._model = model.to(device).eval()
        logger.info("Loaded %s with transformers (%s on %s)", self.model_name, dtype, device)

    def _unload(self) -> None:
        # Dropping the references frees the weights; on CUDA, hand the cached blocks back too.
        on_cuda = self._model is not None and self._model.device.type == "cuda"
        self._model = self._tokenizer = None
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def memory_bytes(self) -> int:
        """Parameter bytes, so ``MODEL_MEMORY_BUDGET`` counts this model too."""
        if self._model is None:
            return 0
        return sum(p.numel() * p.element_size() for p in self._model.parameters())

    def _torch_device_and_dtype(self, torch: Any) -> tuple[str, Any]:
        """ortmodels' device and precision names (settings already normalised) in torch's terms."""
        device = (self.device or "auto").lower()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
        elif device in ("coreml", "mps"):
            device = "mps"
        dtype = (self.dtype or "auto").lower()
        if dtype in ("int8", "int4"):  # MODEL_DTYPE applies to every model; these are ONNX export variants
            logger.warning("%s is an ONNX export precision; %s loads its checkpoint in the automatic one.",
                           dtype, type(self).__name__)
            dtype = "auto"
        if dtype == "auto":
            dtype = "fp32" if device == "cpu" else "fp16"
        torch_dtype = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
                       "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]
        return device, torch_dtype

    # -- generation -------------------------------------------------------------------------------

    def _prepare(self, messages: list[BaseMessage], stop: list[str] | None,
                 kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Prompt ids on the model's device and the keyword arguments for ``generate``."""
        unknown = set(kwargs) - _OPTIONS
        if unknown:
            raise ChatInputError(f"Unknown generation option(s): {', '.join(sorted(unknown))}; "
                             f"this model takes {', '.join(sorted(_OPTIONS))}.")
        max_tokens = kwargs.get("max_tokens") or self.max_tokens
        temperature = kwargs.get("temperature", self.temperature)
        if max_tokens < 1 or (temperature is not None and temperature < 0):
            raise ChatInputError(f"max_tokens must be at least 1 and temperature at least 0, "
                             f"not {max_tokens} and {temperature}.")
        prompt = self._tokenizer.apply_chat_template(
            to_template_messages(messages), add_generation_prompt=True, return_dict=True, return_tensors="pt",
        ).to(self._model.device)
        options: dict[str, Any] = {"input_ids": prompt["input_ids"], "attention_mask": prompt["attention_mask"],
                                   "max_new_tokens": int(max_tokens)}  # not token_type_ids: Llama takes none
        if temperature is not None:  # else: whatever generation_config.json says
            options["do_sample"] = temperature > 0
            if temperature > 0:
                options["temperature"] = float(temperature)
            else:  # greedy: unset the checkpoint's sampling knobs so transformers does not warn
                options.update(temperature=None, top_p=None, top_k=None)
        if stop:  # transformers stops on these strings; the text is cut before them below
            options.update(stop_strings=list(stop), tokenizer=self._tokenizer)
        if self._tokenizer.pad_token_id is None:
            options["pad_token_id"] = self._tokenizer.eos_token_id
        return prompt["input_ids"], options

    def _finish(self, prompt_ids: Any, sequence: Any, max_new_tokens: int) -> tuple[dict[str, int], dict[str, Any]]:
        """Token counts and why the answer ended, as LangChain's metadata."""
        new = sequence[prompt_ids.shape[-1]:]
        eos = self._model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        hit_eos = len(new) > 0 and int(new[-1]) in eos_ids
        usage = {"input_tokens": int(prompt_ids.shape[-1]), "output_tokens": len(new),
                 "total_tokens": int(prompt_ids.shape[-1]) + len(new)}
        finish = "length" if len(new) >= max_new_tokens and not hit_eos else "stop"
        return usage, {"finish_reason": finish, "model_name": self.model_name,
                       "device": str(self._model.device)}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        import torch

        prompt_ids, options = self._prepare(messages, stop, kwargs)
        with torch.inference_mode():
            sequence = self._model.generate(**options)[0]
        new = sequence[prompt_ids.shape[-1]:]
        text = _cut_at_stop(self._tokenizer.decode(new, skip_special_tokens=True), stop)
        usage, metadata = self._finish(prompt_ids, sequence, options["max_new_tokens"])
        message = AIMessage(content=text, usage_metadata=usage, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        """``generate`` runs in a thread and hands text to a `TextIteratorStreamer`, as transformers
        documents; stop strings are held back until they can no longer start in the pending text."""
        import torch
        from transformers import (
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        prompt_ids, options = self._prepare(messages, stop, kwargs)
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancelled = threading.Event()

        class _Cancelled(StoppingCriteria):  # a caller that stops reading stops the generation too
            def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    outcome["sequence"] = self._model.generate(
                        **options, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]))[0]
            except Exception as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
                outcome["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name="hf-generate", daemon=True)
        worker.start()
        hold = max((len(s) for s in stop or ()), default=1) - 1
        text, sent = "", 0
        try:
            for piece in streamer:
                text += piece
                cut = _cut_at_stop(text, stop)
                end = len(cut) if len(cut) < len(text) else max(sent, len(text) - hold)
                if end > sent:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text[sent:end]))
                    if run_manager:
                        run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                    yield chunk
                    sent = end
                if len(cut) < len(text):
                    cancelled.set()
                    break
        finally:
            cancelled.set()  # the streamer's queue is unbounded, so the worker never waits on us
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        cut = _cut_at_stop(text, stop)
        usage, metadata = self._finish(prompt_ids, outcome["sequence"], options["max_new_tokens"])
        yield ChatGenerationChunk(message=AIMessageChunk(
            content=cut[sent:], usage_metadata=usage, response_metadata=metadata, chunk_position="last"))


def _cut_at_stop(text: str, stop: list[str] | None) -> str:
    """``text`` up to the first stop string, if any occurs."""
    hits = [i for i in (text.find(s) for s in stop or ()) if i >= 0]
    return text[:min(hits)] if hits else text


if __name__ == "__main__":
    import sys

    from langchain_core.messages import HumanMessage, SystemMessage

    from ortmodels import ModelManager

    question = " ".join(sys.argv[1:]) or "What is the capital of France?"
    manager = ModelManager()
    chat = manager.get_chat_model("smollm2-135m-instruct", HuggingFaceChatModel)
    answer = chat.invoke([SystemMessage("Be brief."), HumanMessage(question)], max_tokens=48, temperature=0)
    print(answer.content)
    print(answer.usage_metadata)
    for chunk in chat.stream("Write a haiku about the sea.", max_tokens=48):
        print(chunk.content, end="", flush=True)
    print()
    manager.unload_all()
