"""The last line a process logs: what it left running or open at exit (tasks, HTTP clients, the
Kubernetes client), so a shutdown that forgets something says so instead of passing silently."""

from __future__ import annotations

import asyncio
import gc
import logging

import aiohttp
import httpx

from llmserve import kube


def open_http_clients() -> list[str]:
    """Every HTTP client object still alive and not closed (aiohttp sessions, httpx clients), by type.
    A scan of the garbage collector's objects: a client held by any module counts, wherever it lives."""
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, aiohttp.ClientSession) and not obj.closed:
            found.append("aiohttp.ClientSession")
        elif isinstance(obj, httpx.AsyncClient | httpx.Client) and not obj.is_closed:
            found.append(f"httpx.{type(obj).__name__}")
    return sorted(found)


def log_what_is_left_open(log: logging.Logger, program: str) -> bool:
    """Logs `event=<program>_exit clean=...` (ERROR when something is left); call it last, inside the loop.
    asyncio.run would cancel leftover tasks silently, and a client still referenced never warns."""
    current = asyncio.current_task()
    tasks = sorted(task.get_name() for task in asyncio.all_tasks() if task is not current and not task.done())
    clients = open_http_clients()
    kube_open = kube.has_client()
    clean = not tasks and not clients and not kube_open
    log.log(logging.INFO if clean else logging.ERROR,
            "event=%s_exit clean=%s tasks_left=%s http_clients_open=%s kubernetes_client_open=%s",
            program, clean, ",".join(tasks) or "-", ",".join(clients) or "-", kube_open)  # fmt: skip
    return clean
