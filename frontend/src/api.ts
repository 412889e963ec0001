// The platform API, same origin (/v1). Every failure becomes an ApiError whose `words` say what
// happened and what to do; a 401 signs the user out with the reason.
import { clearToken, loadToken } from "./auth";

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {},
    public retryAfter: number | null = null,
  ) {
    super(message);
  }

  /** The error in words, with what the user can do about it. */
  get words(): string {
    if (this.status === 401) return "Your session has ended (the sign-in expired or is no longer valid). Please sign in again.";
    if (this.code === "budget_exceeded")
      return "Your organisation's token budget for this period is used up. Ask an administrator to raise it, or try again in the next period.";
    if (this.status === 429) {
      const wait = this.retryAfter ?? (typeof this.details.retry_after_s === "number" ? this.details.retry_after_s : null);
      return `Too many requests right now. ${wait !== null ? `Try again in ${wait} seconds.` : "Wait a moment and try again."}`;
    }
    if (this.status === 403) return `You are not allowed to do this (${this.message}). Ask an administrator if you need it.`;
    if (this.status === 404) return `Not found: ${this.message}.`;
    if (this.status === 413) return `Too large: ${this.message}.`;
    if (this.status === 422 || this.status === 400 || this.status === 415 || this.status === 409)
      return `The request was refused: ${this.message}${validationText(this.details)}.`;
    if (this.status === 502) return `A model or embedding service did not answer (${this.message}). Try again in a minute; if it keeps happening, tell your administrator.`;
    if (this.status === 503) return "The platform is not ready (its database is unavailable). Try again shortly.";
    if (this.status >= 500) return `The platform had an internal problem (HTTP ${this.status}). Try again; if it keeps happening, tell your administrator.`;
    if (this.status === 0) return `The platform could not be reached (${this.message}). Check your connection and try again.`;
    return this.message;
  }
}

function validationText(details: Record<string, unknown>): string {
  const errors = details.errors;
  if (!Array.isArray(errors) || errors.length === 0) return "";
  return ": " + errors.map((e: { loc?: unknown[]; msg?: string }) => `${(e.loc ?? []).slice(1).join(".")} ${e.msg ?? ""}`.trim()).join("; ");
}

type Listener = (err: ApiError) => void;
let unauthorized: Listener = () => undefined;

/** Called on any 401: the app clears the token and shows the sign-in page with the reason. */
export function onUnauthorized(fn: Listener): void {
  unauthorized = fn;
}

async function toError(resp: Response): Promise<ApiError> {
  let code = "http_error";
  let message = resp.statusText || `HTTP ${resp.status}`;
  let details: Record<string, unknown> = {};
  try {
    const body = (await resp.json()) as { error?: { code: string; message: string; details?: Record<string, unknown> } };
    if (body.error) {
      code = body.error.code;
      message = body.error.message;
      details = body.error.details ?? {};
    }
  } catch {
    // not JSON (a proxy's error page): keep the status line
  }
  const ra = resp.headers.get("Retry-After");
  return new ApiError(resp.status, code, message, details, ra && /^\d+$/.test(ra) ? Number(ra) : null);
}

function fail(err: ApiError): never {
  if (err.status === 401) {
    clearToken();
    unauthorized(err);
  }
  throw err;
}

export interface Options {
  method?: string;
  json?: unknown;
  form?: FormData;
  accept?: string;
  token?: string;
}

export async function request(path: string, opts: Options = {}): Promise<Response> {
  const headers: Record<string, string> = {};
  const token = opts.token ?? loadToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (opts.accept) headers.Accept = opts.accept;
  let body: BodyInit | undefined;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.form) {
    body = opts.form;
  }
  let resp: Response;
  try {
    resp = await fetch(path, { method: opts.method ?? (body ? "POST" : "GET"), headers, body });
  } catch (e) {
    throw new ApiError(0, "network_error", e instanceof Error ? e.message : String(e));
  }
  if (!resp.ok) fail(await toError(resp));
  return resp;
}

export async function api<T>(path: string, opts: Options = {}): Promise<T> {
  const resp = await request(path, opts);
  if (resp.status === 204) return undefined as T;
  return (await resp.json()) as T;
}

// ------------------------------------------------------------------ shapes of the API's answers

export interface Me {
  subject: string;
  tenant_id: string;
  tenant: string;
  role: "viewer" | "operator" | "admin";
  groups: string[];
  permissions?: string[]; // approver, steward, compliance_officer
}

export interface Citation {
  n: number;
  // "document": an indexed passage (opened with GET /v1/passages/{chunk_id}); the others carry what they cite.
  kind?: "document" | "record" | "query" | "calculation";
  document_id: string | null;
  title: string;
  chunk_id: string | null;
  page: number | null;
  section: string | null;
  score: number | null;
  system?: string | null;
  entity?: string | null;
  key?: string | null;
  as_of?: string | null;
  source?: "live" | "extract" | null;
  query?: string | null;
  rows?: number | null;
  author?: string | null;
  refused?: string | null;
  formula?: string | null;
  inputs?: unknown[] | null;
  result?: unknown;
}

export interface Passage {
  chunk_id: string;
  document_id: string;
  title: string;
  text: string;
  page: number | null;
  section: string | null;
  classification: string;
  classification_label: string;
}

export interface DoneEvent {
  conversation_id: string;
  message_id: string;
  model: string;
  specialist: string;
  model_tier: string;
  outcome: string;
  trace_id: string;
  ai_disclosure: string;
  retrieval_notes: string[];
  index_version: number | null;
  reasoning: Record<string, unknown> | null;
}

export interface MessageView {
  id: string;
  role: "user" | "assistant";
  content: string;
  citations: Citation[];
  model: string | null;
  created_at: string;
  reasoning: Record<string, unknown> | null;
  withheld: boolean;
}

export interface ConversationView {
  id: string;
  title: string | null;
  created_at: string;
  updated_at: string;
  messages?: MessageView[] | null;
  withheld?: number;
}

export interface TraceView {
  specialist: string;
  model_tier: string;
  model: string;
  outcome: string;
  trace: { step: string; composition?: string; thinking_tool?: string | null }[];
}

export interface DocumentOut {
  id: string;
  title: string;
  filename: string;
  status: string;
  status_reason: string | null;
  classification: string;
  acl_groups: string[];
  chunk_count: number;
  size_bytes: number;
  updated_at: string;
  review: { status: string | null; reason: string | null };
}

export const ROLE_RANK: Record<string, number> = { viewer: 1, operator: 2, admin: 3 };

export function atLeast(me: Me, role: keyof typeof ROLE_RANK): boolean {
  return (ROLE_RANK[me.role] ?? 0) >= ROLE_RANK[role];
}

// ------------------------------------------------------------------ chat over SSE

export interface StreamHandlers {
  start(data: { model: string; ai_disclosure: string }): void;
  delta(text: string): void;
  citations(list: Citation[]): void;
  done(data: DoneEvent): void;
}

// The HTTP status an `error` event's code would have had (the stream itself is already a 200).
const STREAM_ERROR_STATUS: Record<string, number> = {
  budget_exceeded: 429, rate_limited: 429, database_unavailable: 503, internal_error: 500,
  conversation_not_found: 404, invalid_input: 422,
};

const nextTask = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** POST /v1/chat with Accept: text/event-stream. Each event is handed over as it is parsed, and the
 * page gets a turn between deltas, so the answer is painted as it grows. An `error` event becomes an
 * ApiError like an HTTP error would. */
export async function streamChat(body: { message: string; conversation_id?: string | null }, on: StreamHandlers): Promise<void> {
  const resp = await request("/v1/chat", { json: body, accept: "text/event-stream" });
  if (!resp.body) throw new ApiError(0, "no_stream", "the answer stream could not be read");
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += value;
    let cut: number;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      const payload = data.length ? JSON.parse(data.join("\n")) : {};
      if (event === "start") on.start(payload);
      else if (event === "delta") {
        on.delta(payload.text ?? "");
        await nextTask();
      } else if (event === "citations") on.citations(payload.citations ?? []);
      else if (event === "done") on.done(payload);
      else if (event === "error") {
        const code: string = payload.code ?? "stream_error";
        if (code === "token_expired") fail(new ApiError(401, code, payload.message));
        throw new ApiError(STREAM_ERROR_STATUS[code] ?? 502, code, payload.message ?? "the answer failed", payload.details ?? {});
      }
    }
    if (done) break;
  }
}
