// The editor, #/submit: a job as YAML, sent as application/x-yaml. charond's 4xx message is
// shown beside the editor; a "(line N)" in it marks that line in the gutter. On 201 the page
// goes to the new job.

import { api, errorText } from './api.js';
import { h, jobHref } from './dom.js';
import { upsert } from './jobs.js';
import { state } from './state.js';

const SAMPLE = `name: "Hello from the dashboard"
playbook: |
  - hosts: localhost
    gather_facts: false
    tasks:
      - name: Say hello
        ansible.builtin.debug:
          msg: "Hello from charond"
inventory: ["localhost"]
priority: normal
`;

/** Editor line height in px: must match .editor textarea's line-height in style.css. */
const LINE = 20;

export class SubmitPage {
  constructor() {
    this.errLine = 0;
    this.text = h('textarea', {
      'aria-label': 'Job',
      class: 'editor-text',
      spellcheck: 'false',
      autocapitalize: 'off',
      autocomplete: 'off',
      wrap: 'off',
      on: {
        input: () => this.onInput(),
        scroll: () => this.syncScroll(),
        keydown: (e) => this.onKey(e),
      },
    });
    this.text.value = state.draft ?? SAMPLE;
    this.gutter = h('div', { class: 'editor-gutter', 'aria-hidden': 'true' });
    this.bar = h('div', { class: 'editor-bar', hidden: true });
    this.error = h('div', { class: 'error', role: 'alert', hidden: true });
    this.submitBtn = h('button', { type: 'button', class: 'btn primary', on: { click: () => this.submit() } }, 'Submit');
    this.el = h(
      'section',
      { class: 'view submit-view' },
      h('h1', {}, 'Submit a job'),
      h(
        'p',
        { class: 'muted' },
        'The job as YAML, as the README describes it: name and playbook (a path inside -playbook-dir, or an embedded playbook), inventory, variables, priority and the launch options. Ctrl+Enter submits.',
      ),
      h('div', { class: 'editor' }, this.gutter, h('div', { class: 'editor-main' }, this.bar, this.text)),
      this.error,
      h('div', { class: 'actions' }, this.submitBtn),
    );
    this.lines = 0;
    this.renderGutter();
  }

  destroy() {}

  onInput() {
    state.draft = this.text.value;
    this.renderGutter();
  }

  onKey(e) {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      this.submit();
    }
  }

  /** renderGutter numbers the lines, the erroneous one marked. */
  renderGutter() {
    const n = Math.max(1, this.text.value.split('\n').length);
    if (n !== this.lines || this.gutter.dataset.err !== String(this.errLine)) {
      this.lines = n;
      this.gutter.dataset.err = String(this.errLine);
      const frag = document.createDocumentFragment();
      for (let i = 1; i <= n; i++) frag.append(h('div', { class: i === this.errLine ? 'err' : null, text: String(i) }));
      this.gutter.replaceChildren(frag);
    }
    this.syncScroll();
  }

  syncScroll() {
    this.gutter.scrollTop = this.text.scrollTop;
    if (this.errLine) this.bar.style.transform = `translateY(${(this.errLine - 1) * LINE - this.text.scrollTop}px)`;
  }

  setErrorLine(n) {
    this.errLine = n;
    this.bar.hidden = !n;
    this.renderGutter();
  }

  /** goToLine puts the caret at the start of line n and scrolls it into view. */
  goToLine(n) {
    const lines = this.text.value.split('\n');
    let at = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i++) at += lines[i].length + 1;
    this.text.focus();
    this.text.setSelectionRange(at, at + (lines[n - 1] || '').length);
    this.text.scrollTop = Math.max(0, (n - 3) * LINE);
    this.syncScroll();
  }

  async submit() {
    this.error.hidden = true;
    this.setErrorLine(0);
    this.submitBtn.disabled = true;
    try {
      const job = await api('/api/v1/jobs', { method: 'POST', type: 'application/x-yaml', body: this.text.value });
      upsert(job);
      location.hash = jobHref(job.id);
    } catch (err) {
      this.showError(err);
    } finally {
      this.submitBtn.disabled = false;
    }
  }

  showError(err) {
    const text = errorText(err);
    const m = /\(line (\d+)\)/.exec(text) || /\bline (\d+)\b/.exec(text);
    const n = m ? Number(m[1]) : 0;
    const parts = [h('span', { text })];
    if (n > 0) {
      this.setErrorLine(n);
      parts.push(' ', h('button', { type: 'button', class: 'linklike', on: { click: () => this.goToLine(n) } }, `Go to line ${n}`));
    }
    this.error.replaceChildren(...parts);
    this.error.hidden = false;
  }
}
