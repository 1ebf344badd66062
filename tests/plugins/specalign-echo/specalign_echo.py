"""A deterministic backend: every answer repeats the first line of the last message."""

from typing import Any

from specalign.models import ChatRequest, Completion, ModelBackend, ModelSettings, Usage


class EchoBackend(ModelBackend):
    kind = "echo"

    def __init__(self, settings: ModelSettings):
        self.settings = settings

    def identity(self) -> dict[str, Any]:
        # what tells this backend's answers apart in the call cache: never a secret
        return {"kind": self.kind, "model": self.settings.model_name}

    async def chat(self, request: ChatRequest) -> Completion:
        line = request.messages[-1].content.strip().splitlines()[0]
        text = f"[{self.settings.model_name}] {line}"
        if request.sample_index:  # repeated samples of one request differ
            text += f" (sample {request.sample_index})"
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))
        return Completion(text=text, usage=usage, finish_reason="stop")
