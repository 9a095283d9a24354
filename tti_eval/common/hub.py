"""Fail fast when a model or dataset must come from the Hugging Face hub and the hub does not answer.

Without this check, huggingface_hub retries every file it cannot reach for about 23 s (five back-offs), once per
file and per model, and only then falls back to its cache; one question to the hub per process replaces all that.
"""

import functools

from tti_eval.common.errors import TTIEvalError

PROBE_TIMEOUT_S = 3.0  # enough for a slow link to answer; a dead one costs this once per process


@functools.cache
def _hub_answers(endpoint: str) -> bool:
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.utils import get_session

    try:
        # Any HTTP answer, an error status included, means the hub is reachable; only a transport failure is not.
        # The shared session is huggingface_hub's own, so proxies and certificates are the ones its downloads use.
        get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)
    except httpx2.TransportError:
        return False
    return True


def require_hub(who: str, name: str) -> None:
    """Raise one sentence naming the offline way when `who` (e.g. "Model 'clip'") needs `name` from an unreachable hub.

    With HF_HUB_OFFLINE set nothing is asked: the libraries then read only their caches, which is the offline way.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _hub_answers(constants.ENDPOINT):
        return
    raise TTIEvalError(
        f"{who}: the Hugging Face hub at {constants.ENDPOINT} cannot be reached, so '{name}' cannot be downloaded; "
        "connect to the network, or work offline with HF_HUB_OFFLINE=1 (what was downloaded before then loads from "
        "the cache) or with a local path in title_in_source."
    )
