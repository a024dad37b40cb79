"""The native request (SGLang 0.2.x `GenerateReqInput` shape) and its normalization.

`GenerateReqInput.from_dict` / the Engine's keyword arguments give one object; `normalize()` turns it
into a flat list of `ReqItem`s, one per (prompt, sample): batch input and `sampling_params.n > 1` are
expanded here, prompt-major ("n>1 expands each prompt to n outputs in order"), and every per-prompt
field given as a list is checked against the batch size. Errors are ValueErrors naming the field.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from typing import Any, Optional, Union

from sglang.runtime.sampling.sampling_params import SamplingParams

# Output-size cap: each position's top list costs ~100 bytes of JSON, so the whole vocabulary per token
# (1.8 MB) times a long prompt would be gigabytes. OpenAI allows at most 20 as well.
MAX_TOP_LOGPROBS_NUM = 20


@dataclass
class GenerateReqInput:
    text: Union[str, list[str], None] = None
    input_ids: Union[list[int], list[list[int]], None] = None
    sampling_params: Union[dict, SamplingParams, list, None] = None
    return_logprob: Union[bool, list[bool]] = False
    logprob_start_len: Union[int, list[int], None] = None
    top_logprobs_num: Union[int, list[int], None] = None
    return_text_in_logprobs: bool = False
    stream: bool = False
    rid: Union[str, list[str], None] = None
    # vision-language models (SGLang's field): per prompt an image (path | bytes | PIL | data URL | base64)
    # or a list of them; a batch gives a list with one such entry per prompt
    image_data: Any = None
    # LLaVA-NeXT-Video: per prompt (path, num_frames) / {"path", "num_frames"} or a list of them
    video_data: Any = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenerateReqInput":
        if not isinstance(d, dict):
            raise ValueError(f"request must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown request field(s): {', '.join(unknown)}")
        return cls(**d)

    # -- shape ------------------------------------------------------------------------------------
    @property
    def is_batch(self) -> bool:
        if self.text is not None:
            return not isinstance(self.text, str)
        return bool(self.input_ids) and isinstance(self.input_ids[0], (list, tuple))

    def prompts(self) -> list[tuple[Optional[str], Optional[list[int]]]]:
        if (self.text is None) == (self.input_ids is None):
            raise ValueError("exactly one of text / input_ids must be given")
        if self.text is not None:
            texts = [self.text] if isinstance(self.text, str) else self.text
            if not isinstance(texts, (list, tuple)) or not texts:
                raise ValueError("text must be a string or a non-empty list of strings")
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise ValueError(f"text[{i}] must be a string, got {type(t).__name__}")
            return [(t, None) for t in texts]
        ids = self.input_ids
        if not isinstance(ids, (list, tuple)):
            raise ValueError(f"input_ids must be a list of token ids, got {type(ids).__name__}")
        batch = [ids] if not self.is_batch else list(ids)
        out = []
        for i, row in enumerate(batch):
            # one C-speed pass over the row's element types (exactly int: a bool is not a token id)
            if not isinstance(row, (list, tuple)) or not {int}.issuperset(map(type, row)):
                raise ValueError(f"input_ids[{i}] must be a list of integers" if self.is_batch else
                                 "input_ids must be a list of integers")
            out.append((None, list(row)))
        return out

    def _per_prompt(self, name: str, value: Any, n: int, default: Any) -> list[Any]:
        """A field given once applies to every prompt; a list gives one value per prompt."""
        if value is None:
            return [default] * n
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} entries for {n} prompt(s)")
            return [default if v is None else v for v in value]
        return [value] * n

    def _per_prompt_media(self, name: str, value: Any, n: int) -> list[Any]:
        """A single prompt takes the whole value (one image or its list of images); a batch needs a list
        with one entry per prompt (None for a prompt without any)."""
        if value is None or not self.is_batch:
            return [value] + [None] * (n - 1)
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise ValueError(f"{name} must be a list with one entry per prompt ({n}) for batch input")
        return list(value)

    def normalize(self) -> list["ReqItem"]:
        prompts = self.prompts()
        n = len(prompts)
        sps = self._per_prompt("sampling_params", self.sampling_params, n, None)
        lps = self._per_prompt("return_logprob", self.return_logprob, n, False)
        starts = self._per_prompt("logprob_start_len", self.logprob_start_len, n, -1)
        tops = self._per_prompt("top_logprobs_num", self.top_logprobs_num, n, 0)
        if self.rid is None:
            rids = [uuid.uuid4().hex for _ in range(n)]
        elif isinstance(self.rid, str):
            if n > 1:
                raise ValueError("rid must be a list with one id per prompt for batch input")
            rids = [self.rid]
        else:
            rids = self._per_prompt("rid", self.rid, n, None)
            if any(not isinstance(r, str) for r in rids):
                raise ValueError("rid entries must be strings")
            if len(set(rids)) != n:
                raise ValueError("rid entries must be unique")
        images = self._per_prompt_media("image_data", self.image_data, n)
        videos = self._per_prompt_media("video_data", self.video_data, n)
        items: list[ReqItem] = []
        for i, (text, ids) in enumerate(prompts):
            where = f"request {i}: " if n > 1 else ""
            try:
                sp = SamplingParams.from_dict(sps[i])
            except ValueError as e:
                raise ValueError(f"{where}{e}") from None
            for name, v, typ in (("return_logprob", lps[i], bool), ("logprob_start_len", starts[i], int),
                                 ("top_logprobs_num", tops[i], int)):
                if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
                    raise ValueError(f"{where}{name} must be {typ.__name__}, got {v!r}")
            if starts[i] < -1:
                raise ValueError(f"{where}logprob_start_len must be >= -1, got {starts[i]}")
            if not 0 <= tops[i] <= MAX_TOP_LOGPROBS_NUM:
                raise ValueError(f"{where}top_logprobs_num must be in [0, {MAX_TOP_LOGPROBS_NUM}], got {tops[i]}")
            if sp.n < 1:  # n=0 would expand to no outputs at all (an empty 200)
                raise ValueError(f"{where}sampling_params.n must be >= 1, got {sp.n}")
            for j in range(sp.n):
                items.append(ReqItem(
                    index=i, sample=j, rid=rids[i] if sp.n == 1 else f"{rids[i]}-{j}", group=rids[i],
                    text=text, input_ids=ids, sampling_params=_sample_params(sp, j),
                    return_logprob=lps[i], logprob_start_len=starts[i], top_logprobs_num=tops[i],
                    return_text_in_logprobs=bool(self.return_text_in_logprobs), stream=bool(self.stream),
                    image_data=images[i], video_data=videos[i],
                ))
        return items

    def single_output(self) -> bool:
        """Whether the response is one dict (a single prompt, one sample) rather than a list."""
        if self.is_batch:
            return False
        sp = self.sampling_params
        if isinstance(sp, list):
            sp = sp[0] if sp else None
        n = sp.n if isinstance(sp, SamplingParams) else (sp or {}).get("n", 1) if isinstance(sp, dict) else 1
        return n in (1, None)


@dataclass
class ReqItem:
    index: int  # prompt index in the batch
    sample: int  # 0..n-1
    rid: str  # internal id, unique per sample
    group: str  # the caller's rid for this prompt (abort(group) aborts all its samples)
    text: Optional[str]
    input_ids: Optional[list[int]]
    sampling_params: SamplingParams
    return_logprob: bool
    logprob_start_len: int
    top_logprobs_num: int
    return_text_in_logprobs: bool
    stream: bool
    image_data: Any = None
    video_data: Any = None


def _sample_params(sp: SamplingParams, j: int) -> SamplingParams:
    """Sample j of n: n=1, and a seeded request gives sample j seed + j (distinct, reproducible)."""
    if sp.n == 1:
        return sp
    return sp.replace(n=1, seed=None if sp.seed is None else sp.seed + j)
