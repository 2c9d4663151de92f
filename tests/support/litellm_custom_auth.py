# A LiteLLM custom-auth hook for tests/litellm.rs: gives each test key its limits without a
# database. The proxy loads it from its config (`general_settings.custom_auth:
# custom_auth.user_api_key_auth`); the test copies it next to the config it writes.
import hashlib

from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {
    # No limits of its own: the router's limits and the upstream's errors.
    "sk-free": {},
    # The key limiter (v3, or the legacy one on the second proxy).
    "sk-rpm": {"rpm_limit": 2},
    "sk-rpm-messages": {"rpm_limit": 2},
    "sk-tpm": {"tpm_limit": 10},
    "sk-parallel": {"max_parallel_requests": 1},
    "sk-parallel-pace": {"max_parallel_requests": 1},
    "sk-pace": {"rpm_limit": 5},
    # Budgets: a key already over its budget, and a key with a budget for one model.
    "sk-budget": {"max_budget": 0.001, "spend": 1.0},
    "sk-model-budget": {"model_max_budget": {"priced": {"budget_limit": 0.000001, "time_period": "1d"}}},
}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    limits = KEYS.get(api_key)
    if limits is None:
        raise Exception("unknown test key")
    token = hashlib.sha256(api_key.encode()).hexdigest()
    return UserAPIKeyAuth(api_key=api_key, token=token, **limits)
