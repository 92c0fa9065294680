"""The Textual application of ``cgr ui``.

Screens: the run table (live), a run's detail (fields, event history, a live tail of the
agent's stream rendered as readable lines, the prompt), a confirmation before cancelling
or retrying, and the keyboard help. Reads go straight to the store (a local SQLite file,
milliseconds); cancel and retry run as workers so the screen never freezes on GitHub.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Header, Log, Static, TabbedContent, TabPane

from cgr_cli.config._model import Config
from cgr_cli.ui._data import LogTail, RunSource, age, money, render_agent_line

STATUS_STYLE = {
    "queued": "cyan",
    "claimed": "cyan",
    "running": "bold yellow",
    "succeeded": "green",
    "failed": "bold red",
    "needs_human": "magenta",
    "cancelled": "dim",
    "timed_out": "red",
}

HELP = """\
[b]cgr ui — keys[/b]

[b]Runs[/b]
  ↑ ↓ / PgUp PgDn   move in the table
  Enter              open the run
  c                  cancel the run (asks first)
  r                  retry the run: queue a new attempt (asks first)
  g                  reload now
  ?                  this help
  q / Esc            quit

[b]A run[/b]
  e / l / p          events, agent log (live), prompt
  c / r              cancel / retry (asks first)
  q / Esc            back to the runs

Press Esc or q to close this help."""


def _cgr_app(app: object) -> CgrApp:
    if not isinstance(app, CgrApp):  # pragma: no cover - screens only live in CgrApp
        raise TypeError(f"cgr ui screens run inside CgrApp, not {type(app).__name__}")
    return app


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


class ConfirmScreen(ModalScreen[bool]):
    """Yes or no; dismissed with the answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No", show=False),
        Binding("q", "answer(False)", "No", show=False),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Static("[b]y[/b] yes    [b]n[/b] / [b]Esc[/b] no", id="choices")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(HELP, id="help")

    def action_close(self) -> None:
        self.dismiss(None)


class RunsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Open", show=True),
        Binding("c", "cancel", "Cancel run"),
        Binding("r", "retry", "Retry run"),
        Binding("g", "reload", "Reload"),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
        Binding("escape", "app.quit", "Quit", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="message")
        yield Footer()

    @property
    def cgr(self) -> CgrApp:
        return _cgr_app(self.app)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for label, key in (("run", "id"), ("status", "status"), ("repository", "repo"),
                           ("target", "target"), ("age", "age"), ("cost", "cost"),
                           ("outcome", "outcome")):  # fmt: skip
            table.add_column(label, key=key)
        self.reload()
        if self.cgr.refresh_seconds:
            self.set_interval(self.cgr.refresh_seconds, self.reload)

    def reload(self) -> None:
        table = self.query_one("#runs", DataTable)
        selected = self.selected_run()
        table.clear()
        rows = self.cgr.source.rows()
        for row in rows:
            table.add_row(row.id, _status(row.status), row.repo, row.target, row.age,
                          row.cost, row.outcome, key=row.id)  # fmt: skip
        if selected is not None and any(r.id == selected for r in rows):
            table.move_cursor(row=table.get_row_index(selected))
        active = sum(1 for r in rows if r.status in ("queued", "claimed", "running"))
        self.sub_title = f"{active} active, {len(rows) - active} ended"

    def selected_run(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(RunScreen(str(event.row_key.value)))

    def action_open(self) -> None:
        run_id = self.selected_run()
        if run_id is not None:
            self.app.push_screen(RunScreen(run_id))

    def action_reload(self) -> None:
        self.reload()

    def action_cancel(self) -> None:
        if (run_id := self.selected_run()) is not None:
            self.cgr.confirm_cancel(run_id)

    def action_retry(self) -> None:
        if (run_id := self.selected_run()) is not None:
            self.cgr.confirm_retry(run_id)


class RunScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("q", "back", "Back", show=False),
        Binding("e", "tab('events')", "Events"),
        Binding("l", "tab('agent')", "Agent log"),
        Binding("p", "tab('prompt')", "Prompt"),
        Binding("c", "cancel", "Cancel run"),
        Binding("r", "retry", "Retry run"),
        Binding("question_mark", "app.help", "Help"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self._tail: LogTail | None = None

    @property
    def cgr(self) -> CgrApp:
        return _cgr_app(self.app)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        with TabbedContent(initial="events"):
            with TabPane("Events", id="events"):
                yield DataTable(id="history", cursor_type="row")
            with TabPane("Agent log", id="agent"):
                yield Log(id="log", highlight=False)
            with TabPane("Prompt", id="prompt"), VerticalScroll():
                yield Static("", id="prompt-text", markup=False)
        yield Static("", id="message")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.run_id
        table = self.query_one("#history", DataTable)
        for label in ("when", "from", "to", "detail"):
            table.add_column(label, key=label)
        self._tail = LogTail(self.cgr.source.agent_log_path(self.run_id))
        self.query_one("#prompt-text", Static).update(self.cgr.source.prompt(self.run_id))
        self.reload()
        self.follow_log()
        if self.cgr.refresh_seconds:
            self.set_interval(self.cgr.refresh_seconds, self.reload)
            # The agent log is tailed faster than the table: it is what a person watches.
            self.set_interval(min(0.5, self.cgr.refresh_seconds), self.follow_log)

    def reload(self) -> None:
        run, events = self.cgr.source.run(self.run_id)
        now = self.cgr.source.now()
        lines = [
            Text.assemble(
                (f"{run.repo}#{run.target}", "bold"),
                "  ",
                _status(str(run.status)),
                f"  {run.kind}  attempt {run.attempt}  created {age(run.created_at, now)} ago",
            ),
            Text(
                f"outcome {run.outcome or '-'}   cost {money(run.cost_usd)}   turns "
                f"{run.turns if run.turns is not None else '-'}   branch {run.branch or '-'}   "
                f"PR {run.pr_url or '-'}"
            ),
        ]
        if run.error:
            lines.append(Text(f"error: {run.error}", style="red"))
        self.query_one("#summary", Static).update(Text("\n").join(lines))
        table = self.query_one("#history", DataTable)
        table.clear()
        for event in events:
            table.add_row(
                event.at.strftime("%Y-%m-%d %H:%M:%S"),
                str(event.from_status or "-"),
                _status(str(event.to_status)),
                event.detail,
            )

    def follow_log(self) -> None:
        if self._tail is None:
            return
        rendered = [text for line in self._tail.read() for text in render_agent_line(line)]
        if rendered:
            self.query_one("#log", Log).write_lines(rendered)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_cancel(self) -> None:
        self.cgr.confirm_cancel(self.run_id)

    def action_retry(self) -> None:
        self.cgr.confirm_retry(self.run_id)


class CgrApp(App[None]):
    """The dashboard. ``refresh_seconds=None`` turns live reloading off (tests)."""

    TITLE = "cgr"
    CSS = """
    #message { height: 1; color: $text-muted; padding: 0 1; }
    #summary { padding: 0 1; height: auto; }
    ConfirmScreen, HelpScreen { align: center middle; }
    #dialog { width: auto; max-width: 80; height: auto; border: thick $accent;
              padding: 1 2; background: $surface; }
    #choices { margin-top: 1; }
    /* A width:auto container sizes to its children, and a Static's default width (1fr) is
       a share of the container: with both, each waits for the other and the dialog drew
       as an empty box. The texts size to their content instead. */
    #dialog > Static { width: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+c", "quit", "Quit", show=False)]

    def __init__(
        self,
        source: RunSource,
        *,
        config: Config | None = None,
        refresh_seconds: float | None = 2.0,
    ) -> None:
        super().__init__()
        self.source = source
        self.config = config
        self.refresh_seconds = refresh_seconds
        self.last_message = ""

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def say(self, message: str) -> None:
        """Show the outcome of an action on the current screen's message line."""
        self.last_message = message
        for widget in self.screen.query("#message"):
            if isinstance(widget, Static):
                widget.update(message)
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen | RunScreen):
                screen.reload()

    def confirm_cancel(self, run_id: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._cancel(run_id), exclusive=True, group="actions")

        self.push_screen(ConfirmScreen(f"Cancel run {run_id}?"), answered)

    def confirm_retry(self, run_id: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self._retry(run_id)

        self.push_screen(
            ConfirmScreen(f"Retry: queue a new attempt for the target of {run_id}?"), answered
        )

    async def _cancel(self, run_id: str) -> None:
        from cgr_cli._errors import CgrError
        from cgr_cli.ui._actions import cancel
        from cgr_discovery import DiscoveryError
        from cgr_store import StoreError

        if self.config is None:
            self.say("cannot cancel: no configuration (GitHub settings) loaded")
            return
        self.say(f"cancelling {run_id}…")
        try:
            message = await cancel(self.config, self.source.store, run_id)
        except (CgrError, DiscoveryError, StoreError) as exc:
            message = f"cancel failed: {exc}"
        self.say(message)

    def _retry(self, run_id: str) -> None:
        from cgr_cli._errors import CgrError
        from cgr_cli.ui._actions import retry
        from cgr_store import StoreError

        try:
            message = retry(self.source.store, run_id)
        except (CgrError, StoreError) as exc:
            message = f"retry failed: {exc}"
        self.say(message)


def run_app(source: RunSource, config: Config, **kwargs: Any) -> None:
    CgrApp(source, config=config, **kwargs).run()
