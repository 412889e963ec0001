{{- define "eap.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "eap.labels" -}}
app.kubernetes.io/name: eap
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "eap.selector" -}}
app.kubernetes.io/name: eap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- /* Pod and container hardening shared by every platform container: the image's non-root user. */ -}}
{{- define "eap.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "eap.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{- define "eap.env" -}}
{{- range $k, $v := .Values.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- if .Values.litellm.enabled }}
- name: EAP_LLM_API_BASE
  value: {{ printf "http://%s-litellm:%v" (include "eap.fullname" .) .Values.litellm.port | quote }}
- name: EAP_LLM_MODEL_LIGHT
  value: openai/eap-light
- name: EAP_LLM_MODEL_STANDARD
  value: openai/eap-standard
- name: EAP_LLM_MODEL_HEAVY
  value: openai/eap-heavy
{{- end }}
{{- end -}}
