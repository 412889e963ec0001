import { Accordion, ActionIcon, Alert, Box, Button, Grid, Group, Loader, Modal, NavLink, Paper, ScrollArea, Stack, Table, Text, Textarea, Title } from "@mantine/core";
import { useCallback, useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { flushSync } from "react-dom";
import { api, ApiError, streamChat, type Citation, type ConversationView, type DoneEvent, type Me, type Passage, type TraceView } from "./api";
import { ClassBadge } from "./common";

interface Turn {
  key: string;
  role: "user" | "assistant";
  text: string;
  citations: Citation[];
  streaming?: boolean;
  done?: DoneEvent;
  composition?: string;
  model?: string | null;
  disclosure?: string;
  reasoning?: Record<string, unknown> | null;
  withheld?: boolean;
  error?: string;
  messageId?: string;
}

const EXTRACTIVE_PREFIX = "eap-extractive/";

function Thumb({ down }: { down?: boolean }) {
  return (
    <svg width="18" height="18" viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" strokeWidth="2"
      style={down ? { transform: "rotate(180deg)" } : undefined}>
      <path d="M7 10v11H3V10h4zm0 0 4-8a3 3 0 0 1 3 3v4h5.5a2 2 0 0 1 2 2.3l-1.4 8A2 2 0 0 1 18 21H7" />
    </svg>
  );
}

function show(v: unknown): string {
  return typeof v === "string" ? v : JSON.stringify(v);
}

/** A system record (SAP/MES), a SQL Guard query or a calculation: what the answer's [n] rests on. */
function NonDocumentSource({ citation: c }: { citation: Citation }) {
  const rows: [string, string][] = [];
  const add = (label: string, v: unknown) => {
    if (v !== null && v !== undefined && v !== "") rows.push([label, show(v)]);
  };
  add("Kind", c.kind ?? "record");
  add("System", c.system);
  add("Entity", c.entity);
  add("Key", c.key);
  add("Rows", c.rows);
  add("Written by", c.author);
  add("Refused", c.refused);
  add("Formula", c.formula);
  add("Inputs", c.inputs);
  add("Result", c.result);
  add("Data as of", c.as_of);
  add("Read from", c.source === "extract" ? "nightly extract" : c.source);
  return (
    <Stack gap="xs" data-testid="record-source">
      <Table withRowBorders={false} verticalSpacing={2}>
        <Table.Tbody>
          {rows.map(([k, v]) => (
            <Table.Tr key={k}><Table.Th scope="row" w={120}>{k}</Table.Th><Table.Td>{v}</Table.Td></Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {c.query && (
        <Paper withBorder p="sm" component="pre" m={0} style={{ whiteSpace: "pre-wrap" }} data-testid="record-query">
          {c.query}
        </Paper>
      )}
    </Stack>
  );
}

function PassageModal({ citation, onClose }: { citation: Citation | null; onClose(): void }) {
  const [passage, setPassage] = useState<Passage | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setPassage(null);
    setError(null);
    if (!citation || !citation.chunk_id) return;  // records, queries and calculations carry what they cite
    api<Passage>(`/v1/passages/${citation.chunk_id}`).then(setPassage)
      .catch((e) => setError(e instanceof ApiError ? e.words : String(e)));
  }, [citation]);
  return (
    <Modal opened={citation !== null} onClose={onClose} size="lg"
      title={citation ? `Source [${citation.n}]: ${citation.title}` : ""}>
      {citation && !citation.chunk_id && <NonDocumentSource citation={citation} />}
      {error && <Alert color="red" role="alert">{error}</Alert>}
      {citation?.chunk_id && !passage && !error && <Loader size="sm" aria-label="Loading the passage" />}
      {passage && (
        <Stack gap="xs" data-testid="passage">
          <Group gap="xs">
            <Text fw={600} data-testid="passage-title">{passage.title}</Text>
            <ClassBadge cls={passage.classification} />
          </Group>
          <Text size="sm">
            {passage.page !== null ? `Page ${passage.page}` : "No page"}{passage.section ? ` · Section: ${passage.section}` : ""}
          </Text>
          <Paper withBorder p="sm" component="blockquote" m={0}>
            <Text style={{ whiteSpace: "pre-wrap" }} data-testid="passage-text">{passage.text}</Text>
          </Paper>
        </Stack>
      )}
    </Modal>
  );
}

function Feedback({ messageId }: { messageId: string }) {
  const [rating, setRating] = useState<"up" | "down" | null>(null);
  const [commenting, setCommenting] = useState(false);
  const [comment, setComment] = useState("");
  const [state, setState] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function send(r: "up" | "down", text?: string) {
    setError(null);
    try {
      await api("/v1/feedback", { json: { message_id: messageId, rating: r, ...(text ? { comment: text } : {}) } });
      setRating(r);
      setState("Thank you, your feedback was saved.");
      setCommenting(false);
    } catch (e) {
      setError(e instanceof ApiError ? e.words : String(e));
    }
  }

  return (
    <Stack gap={4}>
      <Group gap={4}>
        <ActionIcon variant={rating === "up" ? "filled" : "default"} aria-label="Good answer" aria-pressed={rating === "up"}
          onClick={() => send("up")}><Thumb /></ActionIcon>
        <ActionIcon variant={rating === "down" ? "filled" : "default"} aria-label="Bad answer" aria-pressed={rating === "down"}
          onClick={() => setCommenting(true)}><Thumb down /></ActionIcon>
        {state && <Text size="sm" role="status">{state}</Text>}
      </Group>
      {commenting && (
        <form onSubmit={(e) => { e.preventDefault(); void send("down", comment.trim()); }}>
          <Group align="flex-end" gap="xs">
            <Textarea label="What was wrong? (optional)" value={comment} onChange={(e) => setComment(e.currentTarget.value)}
              maxLength={2000} autosize minRows={1} style={{ flex: 1 }} data-autofocus />
            <Button type="submit" variant="default">Send feedback</Button>
          </Group>
        </form>
      )}
      {error && <Alert color="red" role="alert">{error}</Alert>}
    </Stack>
  );
}

function Reasoning({ reasoning }: { reasoning: Record<string, unknown> }) {
  const { tool, summary, ...rest } = reasoning;
  return (
    <Accordion variant="contained" chevronPosition="left">
      <Accordion.Item value="reasoning">
        <Accordion.Control>Reasoning ({String(tool ?? "thinking tool")})</Accordion.Control>
        <Accordion.Panel>
          {typeof summary === "string" && <Text size="sm" mb="xs">{summary}</Text>}
          <Box component="pre" fz="xs" style={{ whiteSpace: "pre-wrap", overflowWrap: "anywhere", margin: 0 }}>
            {JSON.stringify(rest, null, 2)}
          </Box>
        </Accordion.Panel>
      </Accordion.Item>
    </Accordion>
  );
}

function Notices({ turn }: { turn: Turn }) {
  const d = turn.done;
  const model = d?.model ?? turn.model ?? "";
  const notes: string[] = [];
  if (d?.outcome === "downgraded") notes.push("This answer failed automatic verification: check the cited passages before relying on it.");
  if (d?.outcome === "abstained") notes.push("The platform found no answer in the documents you may read.");
  if (model.startsWith(EXTRACTIVE_PREFIX))
    notes.push("Fallback: no language model answered (none configured, or the token budget is used up), so this answer quotes the retrieved passages (extractive).");
  for (const n of d?.retrieval_notes ?? []) notes.push(n);
  if (notes.length === 0) return null;
  return (
    <Alert color="yellow" variant="light" title="Notice" data-testid="fallback-notice">
      <Stack gap={2}>{notes.map((n) => <Text size="sm" key={n}>{n}</Text>)}</Stack>
    </Alert>
  );
}

function AssistantTurn({ turn, onCite }: { turn: Turn; onCite(c: Citation): void }) {
  const d = turn.done;
  return (
    <Paper withBorder p="sm" radius="md" data-testid="assistant-turn">
      <Stack gap="xs">
        <Text style={{ whiteSpace: "pre-wrap" }} data-testid="answer" data-state={turn.streaming ? "streaming" : "done"}
          aria-busy={turn.streaming ? true : undefined}>
          {turn.text}
          {turn.streaming && turn.text === "" && <Loader size="xs" aria-label="Waiting for the answer" />}
        </Text>
        {turn.error && <Alert color="red" role="alert" title="The answer failed" data-testid="chat-error">{turn.error}</Alert>}
        {turn.citations.length > 0 && (
          <Group gap={6} aria-label="Sources" role="group">
            {turn.citations.map((c) => (
              <Button key={`${c.n}-${c.chunk_id ?? c.kind}`} size="compact-sm" variant="light" radius="xl" data-testid="citation"
                onClick={() => onCite(c)} title={`Open source ${c.n}: ${c.title}${c.page != null ? `, page ${c.page}` : ""}`}>
                [{c.n}] {c.title}{c.page != null ? ` p. ${c.page}` : ""}
              </Button>
            ))}
          </Group>
        )}
        {!turn.streaming && <Notices turn={turn} />}
        {turn.reasoning && <Reasoning reasoning={turn.reasoning} />}
        {(d || turn.model) && (
          <Text size="xs" data-testid="answer-meta">
            {d ? `Specialist: ${d.specialist} · Composition: ${turn.composition ?? "…"} · Tier: ${d.model_tier} · Model: ${d.model}`
              : `Model: ${turn.model}`}
          </Text>
        )}
        {turn.disclosure && <Text size="xs" fs="italic" data-testid="ai-disclosure">{turn.disclosure}</Text>}
        {turn.messageId && !turn.withheld && !turn.streaming && <Feedback messageId={turn.messageId} />}
      </Stack>
    </Paper>
  );
}

export function Chat({ me }: { me: Me }) {
  const [conversations, setConversations] = useState<ConversationView[]>([]);
  const [current, setCurrent] = useState<string | null>(null);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [input, setInput] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [cited, setCited] = useState<Citation | null>(null);
  const [disclosure, setDisclosure] = useState<string | null>(null);
  const bottom = useRef<HTMLDivElement>(null);

  const loadList = useCallback(() => {
    api<ConversationView[]>("/v1/conversations").then(setConversations)
      .catch((e) => setError(e instanceof ApiError ? e.words : String(e)));
  }, []);
  useEffect(loadList, [loadList]);
  useEffect(() => {
    bottom.current?.scrollIntoView({ block: "end" });  // (newer browsers return a Promise: not a clean-up)
  }, [turns.length]);

  async function open(id: string) {
    setError(null);
    try {
      const conv = await api<ConversationView>(`/v1/conversations/${id}`);
      setCurrent(id);
      setTurns((conv.messages ?? []).map((m) => ({
        key: m.id, role: m.role, text: m.content, citations: m.citations ?? [], model: m.model,
        reasoning: m.reasoning, withheld: m.withheld, messageId: m.role === "assistant" ? m.id : undefined,
      })));
    } catch (e) {
      setError(e instanceof ApiError ? e.words : String(e));
    }
  }

  function update(key: string, change: (t: Turn) => Turn) {
    // flushSync: each event is painted on its own, as it arrives.
    flushSync(() => setTurns((ts) => ts.map((t) => (t.key === key ? change(t) : t))));
  }

  async function ask(e?: FormEvent) {
    e?.preventDefault();
    const message = input.trim();
    if (!message || busy) return;
    const key = `a-${Date.now()}`;
    setInput("");
    setBusy(true);
    setError(null);
    setTurns((ts) => [...ts, { key: `u-${key}`, role: "user", text: message, citations: [] },
      { key, role: "assistant", text: "", citations: [], streaming: true }]);
    let finished: DoneEvent | null = null;
    try {
      await streamChat({ message, conversation_id: current }, {
        start: (s) => { setDisclosure(s.ai_disclosure); update(key, (t) => ({ ...t, model: s.model, disclosure: s.ai_disclosure })); },
        delta: (text) => update(key, (t) => ({ ...t, text: t.text + text })),
        citations: (list) => update(key, (t) => ({ ...t, citations: list })),
        done: (d) => { finished = d; update(key, (t) => ({ ...t, done: d, streaming: false, messageId: d.message_id, reasoning: d.reasoning, disclosure: d.ai_disclosure })); },
      });
      const done = finished as DoneEvent | null;
      if (done) {
        setCurrent(done.conversation_id);
        loadList();
        api<TraceView>(`/v1/traces/${done.trace_id}`).then((tr) => {
          const step = tr.trace.find((s) => s.step === "THINK.compose");
          update(key, (t) => ({ ...t, composition: step?.composition ?? "direct" }));
        }).catch(() => update(key, (t) => ({ ...t, composition: "unknown" })));
      } else {
        update(key, (t) => ({ ...t, streaming: false, error: "The answer stream ended early. Try again." }));
      }
    } catch (err) {
      update(key, (t) => ({ ...t, streaming: false, error: err instanceof ApiError ? err.words : String(err) }));
    } finally {
      setBusy(false);
    }
  }

  function onKey(e: KeyboardEvent<HTMLTextAreaElement>) {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      void ask();
    }
  }

  return (
    <Grid gutter="md">
      <Grid.Col span={{ base: 12, sm: 4, md: 3 }}>
        <Stack gap="xs" component="nav" aria-label="Conversations">
          <Title order={2} size="h5">Conversations</Title>
          <Button variant="default" onClick={() => { setCurrent(null); setTurns([]); }}>New conversation</Button>
          <ScrollArea.Autosize mah={{ base: 180, sm: "calc(100vh - 200px)" } as unknown as number}>
            {conversations.length === 0 && <Text size="sm">No conversations yet.</Text>}
            {conversations.map((c) => (
              <NavLink key={c.id} component="button" label={c.title || "Untitled"} active={c.id === current}
                aria-current={c.id === current ? "true" : undefined} onClick={() => void open(c.id)} />
            ))}
          </ScrollArea.Autosize>
        </Stack>
      </Grid.Col>
      <Grid.Col span={{ base: 12, sm: 8, md: 9 }}>
        <Stack gap="sm" component="section" aria-label="Chat">
          <Title order={2} size="h4">Ask about your documents</Title>
          <Text size="sm" data-testid="ai-notice">
            {disclosure ?? "Answers are generated by an AI system from the documents you may read; check the cited sources."}
            {" "}Signed in as {me.subject} ({me.role}).
          </Text>
          {error && <Alert color="red" role="alert">{error}</Alert>}
          <Stack gap="sm" data-testid="messages" aria-live="polite">
            {turns.map((t) => t.role === "user"
              ? <Paper key={t.key} p="sm" radius="md" bg="var(--mantine-color-default-hover)" data-testid="user-turn"><Text style={{ whiteSpace: "pre-wrap" }}>{t.text}</Text></Paper>
              : <AssistantTurn key={t.key} turn={t} onCite={setCited} />)}
            <div ref={bottom} />
          </Stack>
          <form onSubmit={ask} aria-label="Ask a question">
            <Group align="flex-end" gap="xs">
              <Textarea label="Your question" description="Enter sends, Shift+Enter adds a line" value={input}
                onChange={(e) => setInput(e.currentTarget.value)} onKeyDown={onKey} autosize minRows={2} maxLength={4000}
                style={{ flex: 1 }} data-testid="question" />
              <Button type="submit" loading={busy} disabled={!input.trim()}>Send</Button>
            </Group>
          </form>
        </Stack>
      </Grid.Col>
      <PassageModal citation={cited} onClose={() => setCited(null)} />
    </Grid>
  );
}
