import { Alert, Button, Group, Paper, Radio, Stack, Table, TagsInput, Text, Title, VisuallyHidden } from "@mantine/core";
import { Dropzone } from "@mantine/dropzone";
import { useCallback, useEffect, useRef, useState } from "react";
import { api, ApiError, atLeast, type DocumentOut, type Me } from "./api";
import { CLASSES, ClassBadge, StatusBadge } from "./common";

const MOVING = new Set(["queued", "parsing"]);

interface UploadResult {
  name: string;
  ok: boolean;
  text: string;
}

function Upload({ me, onUploaded }: { me: Me; onUploaded(): void }) {
  const [cls, setCls] = useState("II");
  const [groups, setGroups] = useState<string[]>([]);
  const [results, setResults] = useState<UploadResult[]>([]);
  const [busy, setBusy] = useState(false);
  const openRef = useRef<() => void>(null);
  const needsGroups = cls === "III" || cls === "IV";
  const missingGroups = needsGroups && groups.length === 0;

  async function upload(files: File[]) {
    if (missingGroups || files.length === 0) return;
    setBusy(true);
    const out: UploadResult[] = [];
    for (const file of files) {
      const form = new FormData();
      form.append("file", file);
      form.append("classification", cls);
      if (groups.length) form.append("acl_groups", groups.join(","));
      try {
        const r = await api<{ status: string; unchanged: boolean }>("/v1/documents", { form });
        out.push({ name: file.name, ok: true, text: r.unchanged ? "unchanged (already stored)" : `accepted: ${r.status}` });
      } catch (e) {
        out.push({ name: file.name, ok: false, text: e instanceof ApiError ? e.words : String(e) });
      }
    }
    setResults(out);
    setBusy(false);
    onUploaded();
  }

  return (
    <Paper withBorder p="md" radius="md" component="section" aria-labelledby="upload-title">
      <Stack gap="sm">
        <Title order={2} size="h4" id="upload-title">Upload documents</Title>
        <Radio.Group label="Classification" description="Choose before adding files; the platform may raise it, never lower it."
          value={cls} onChange={setCls} name="classification">
          <Stack gap={6} mt={6}>
            {CLASSES.map((c) => (
              <Radio key={c.value} value={c.value} label={c.label} description={c.meaning} data-testid={`class-${c.value}`} />
            ))}
          </Stack>
        </Radio.Group>
        <TagsInput label="Need-to-know groups" description={needsGroups ? "Required for Class III and IV: who may read it." : "Optional for Class I and II."}
          data={me.groups} value={groups} onChange={setGroups} placeholder="type a group, press Enter" clearable
          error={missingGroups ? "Add at least one group for Class III or IV." : undefined} data-testid="acl-groups" />
        <Dropzone onDrop={(files) => void upload(files)} multiple openRef={openRef} disabled={missingGroups || busy} loading={busy}
          aria-label="Drop files here to upload" data-testid="dropzone"
          inputProps={{ "aria-label": "Files to upload" }}>
          <Stack align="center" gap={4} py="md" style={{ pointerEvents: "none" }}>
            <Text fw={600}>Drag files here, or press Enter to choose</Text>
            <Text size="sm">Text, Markdown, HTML, Word, PDF and images (scans are read by OCR); several at once.</Text>
          </Stack>
        </Dropzone>
        <Group>
          <Button onClick={() => openRef.current?.()} disabled={missingGroups || busy}>Choose files…</Button>
        </Group>
        {results.length > 0 && (
          <Stack gap={4} role="status" data-testid="upload-results">
            {results.map((r) => <Text key={r.name} size="sm" c={r.ok ? undefined : "red.8"}>{r.name}: {r.text}</Text>)}
          </Stack>
        )}
      </Stack>
    </Paper>
  );
}

export function Documents({ me }: { me: Me }) {
  const [docs, setDocs] = useState<DocumentOut[]>([]);
  const [total, setTotal] = useState(0);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const operator = atLeast(me, "operator");

  const load = useCallback(() => {
    api<{ items: DocumentOut[]; total: number }>("/v1/documents?limit=200").then((r) => {
      setDocs(r.items);
      setTotal(r.total);
      setLoaded(true);
      setError(null);
    }).catch((e) => setError(e instanceof ApiError ? e.words : String(e)));
  }, []);
  useEffect(load, [load]);
  // Follow documents through ingestion while any is still moving.
  useEffect(() => {
    if (!docs.some((d) => MOVING.has(d.status))) return;
    const t = window.setTimeout(load, 1500);
    return () => window.clearTimeout(t);
  }, [docs, load]);

  async function remove(d: DocumentOut) {
    if (!window.confirm(`Delete "${d.title}" and everything indexed from it?`)) return;
    try {
      await api(`/v1/documents/${d.id}`, { method: "DELETE" });
      load();
    } catch (e) {
      setError(e instanceof ApiError ? e.words : String(e));
    }
  }

  return (
    <Stack gap="md">
      {operator && <Upload me={me} onUploaded={load} />}
      <section aria-labelledby="docs-title">
        <Group justify="space-between" mb="xs">
          <Title order={2} size="h4" id="docs-title">Documents ({total})</Title>
          <Button variant="default" size="sm" onClick={load}>Refresh</Button>
        </Group>
        {error && <Alert color="red" role="alert" mb="sm">{error}</Alert>}
        {loaded && docs.length === 0 && <Text>No documents you may see yet.</Text>}
        {docs.length > 0 && (
          <Table.ScrollContainer minWidth={640}>
            <Table striped highlightOnHover data-testid="documents-table">
              <Table.Thead>
                <Table.Tr>
                  <Table.Th scope="col">Title</Table.Th>
                  <Table.Th scope="col">Class</Table.Th>
                  <Table.Th scope="col">Status</Table.Th>
                  <Table.Th scope="col">Groups</Table.Th>
                  <Table.Th scope="col">Chunks</Table.Th>
                  {operator && <Table.Th scope="col"><VisuallyHidden>Actions</VisuallyHidden></Table.Th>}
                </Table.Tr>
              </Table.Thead>
              <Table.Tbody>
                {docs.map((d) => (
                  <Table.Tr key={d.id} data-testid="document-row" data-title={d.title}>
                    <Table.Td><Text size="sm" fw={500}>{d.title}</Text><Text size="xs">{d.filename}</Text></Table.Td>
                    <Table.Td><ClassBadge cls={d.classification} /></Table.Td>
                    <Table.Td>
                      <StatusBadge status={d.status} />
                      {d.status_reason && <Text size="xs" mt={2}>{d.status_reason}</Text>}
                    </Table.Td>
                    <Table.Td><Text size="sm">{d.acl_groups.join(", ") || "—"}</Text></Table.Td>
                    <Table.Td><Text size="sm">{d.chunk_count}</Text></Table.Td>
                    {operator && (
                      <Table.Td>
                        <Button size="compact-sm" variant="default" color="red" onClick={() => void remove(d)}
                          aria-label={`Delete ${d.title}`}>Delete</Button>
                      </Table.Td>
                    )}
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          </Table.ScrollContainer>
        )}
      </section>
    </Stack>
  );
}
