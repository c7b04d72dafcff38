# charon_events: Charon's Ansible callback plugin. charond embeds this file, writes it into each
# job's work dir and enables it for the run. It is a notification callback, so the stdout
# callback (and so the job's log) stays Ansible's default. It writes one JSON object per event,
# flushed each time, to the file descriptor that charond passes in CHARON_EVENTS_FD: a pipe of
# its own, so events never mix with the log lines on stdout.
#
# Event names follow ansible-runner's. Results carry only small fields (never the module's
# whole result), a failure carries the module's msg, and a task with no_log carries nothing of
# its result at all.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: charon_events
    type: notification
    short_description: send task and host events to charond
    description:
      - Writes one JSON object per playbook event to the file descriptor in CHARON_EVENTS_FD.
    requirements:
      - run by charond, which sets CHARON_EVENTS_FD
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase

# Longest message or item label sent; a module's msg can be large, and the log has it all.
MAX_TEXT = 4096

# Largest set_stats data sent, as JSON: charond keeps it with the job, and a line longer than
# charond's -max-line would be cut and lost with the recap it rides in.
MAX_ARTIFACTS = 32768


def _text(value):
    if value is None:
        return ""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, default=str, sort_keys=True)
        except (TypeError, ValueError):
            value = str(value)
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + "..."
    return value


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "charon_events"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._out = None
        self._play = ""
        self._started = {}  # (host, task uuid) -> monotonic start time
        fd = os.environ.get("CHARON_EVENTS_FD")
        if not fd:
            return
        try:
            fd = int(fd)
            # Modules and their children must not hold charond's pipe open.
            os.set_inheritable(fd, False)
            self._out = os.fdopen(fd, "w", encoding="utf-8", errors="replace")
        except (ValueError, OSError) as e:
            self._display.warning("charon_events: cannot open the events pipe: %s" % e)
            return
        self._emit("charon_callback_loaded")

    def _emit(self, event, **fields):
        if self._out is None:
            return
        fields["event"] = event
        try:
            self._out.write(json.dumps(fields, default=str) + "\n")
            self._out.flush()
        except (OSError, ValueError):
            self._out = None  # charond is gone; the playbook goes on without events

    def v2_playbook_on_start(self, playbook):
        self._emit("playbook_on_start", playbook=os.path.basename(playbook._file_name))

    def v2_playbook_on_play_start(self, play):
        self._play = play.get_name().strip()
        self._emit("playbook_on_play_start", play=self._play)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start(task, False)

    def v2_playbook_on_handler_task_start(self, task):
        self._task_start(task, True)

    def _task_start(self, task, handler):
        fields = dict(play=self._play, task=task.get_name().strip(), action=task.action)
        if handler:
            fields["handler"] = True
        self._emit("playbook_on_task_start", **fields)

    def v2_runner_on_start(self, host, task):
        self._started[(host.get_name(), task._uuid)] = time.monotonic()

    def v2_runner_on_ok(self, result):
        self._result("runner_on_ok", result, final=True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("runner_on_failed", result, final=True, failed=True, ignore_errors=ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._result("runner_on_skipped", result, final=True)

    def v2_runner_on_unreachable(self, result):
        self._result("runner_on_unreachable", result, final=True, failed=True)

    def v2_runner_item_on_ok(self, result):
        self._result("runner_item_on_ok", result, item=True)

    def v2_runner_item_on_failed(self, result):
        self._result("runner_item_on_failed", result, item=True, failed=True)

    def v2_runner_item_on_skipped(self, result):
        self._result("runner_item_on_skipped", result, item=True)

    def _result(self, event, result, final=False, failed=False, item=False, ignore_errors=False):
        task, host, res = result._task, result._host.get_name(), result._result
        fields = dict(
            play=self._play,
            task=task.get_name().strip(),
            action=task.action,
            host=host,
            changed=bool(res.get("changed", False)),
        )
        key = (host, task._uuid)
        started = self._started.pop(key, None) if final else self._started.get(key)
        if started is not None:
            fields["duration"] = round(time.monotonic() - started, 3)
        if ignore_errors:
            fields["ignore_errors"] = True
        if task.no_log or res.get("_ansible_no_log", False):
            fields["no_log"] = True
        else:
            if item:
                fields["item"] = _text(res.get("_ansible_item_label", res.get("item")))
            if failed:
                fields["msg"] = _text(res.get("msg") or res.get("reason") or res.get("stderr"))
        self._emit(event, **fields)

    def v2_playbook_on_stats(self, stats):
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[host] = dict(
                ok=s["ok"],
                changed=s["changed"],
                unreachable=s["unreachable"],
                failed=s["failures"],
                skipped=s["skipped"],
                rescued=s["rescued"],
                ignored=s["ignored"],
            )
        fields = dict(hosts=hosts)
        # What set_stats published for the whole run (per_host: false, or aggregated), which
        # AWX calls the job's artifacts.
        run = (getattr(stats, "custom", None) or {}).get("_run")
        if run:
            size = len(json.dumps(run, default=str))
            if size <= MAX_ARTIFACTS:
                fields["artifacts"] = run
            else:
                fields["artifacts_dropped"] = size
        self._emit("playbook_on_stats", **fields)
