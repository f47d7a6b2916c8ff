{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "kubechat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name of every object. */}}
{{- define "kubechat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "kubechat.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "kubechat.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Namespace of ModelDeployments, worker pods and Leases. */}}
{{- define "kubechat.modelNamespace" -}}
{{- default .Release.Namespace .Values.modelNamespace }}
{{- end }}

{{/* Namespaces the operator manages: modelNamespace first, then watchNamespaces, no repeats. */}}
{{- define "kubechat.watchNamespaces" -}}
{{- $all := list (include "kubechat.modelNamespace" .) }}
{{- range .Values.operator.watchNamespaces }}{{ $all = append $all . }}{{ end }}
{{- uniq $all | toJson }}
{{- end }}

{{/* Where the gateway and the UI find workers: every namespace the operator manages (all of
them when it is cluster-wide), as a --lease-store value. */}}
{{- define "kubechat.leaseStore" -}}
{{- if .Values.operator.clusterWide -}}
kubernetes:*
{{- else -}}
kubernetes:{{ include "kubechat.watchNamespaces" . | fromJsonArray | join "," }}
{{- end -}}
{{- end }}

{{- define "kubechat.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* vLLM's image for engine: vllm worker pods: the digest when given, else the tag. */}}
{{- define "kubechat.vllmImage" -}}
{{- if .Values.vllm.image.digest }}
{{- printf "%s@%s" .Values.vllm.image.repository .Values.vllm.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.vllm.image.repository .Values.vllm.image.tag }}
{{- end }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "gateway"). */}}
{{- define "kubechat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "kubechat.selectorLabels" . }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kubechat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubechat.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Common pod spec parts: security context, pull secrets, scheduling; needs (dict "root" $ "role" .Values.x). */}}
{{- define "kubechat.podCommon" -}}
automountServiceAccountToken: true
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .role.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The container fields every role shares. */}}
{{- define "kubechat.containerCommon" -}}
image: {{ include "kubechat.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
resources:
  {{- toYaml .role.resources | nindent 2 }}
{{- end }}

{{/* The gateway's API-key Secret name. */}}
{{- define "kubechat.gateway.secretName" -}}
{{- default (printf "%s-api-keys" (include "kubechat.fullname" .)) .Values.gateway.auth.existingSecret }}
{{- end }}

{{/* What the operator may do in a namespace it manages. */}}
{{- define "kubechat.operator.rules" -}}
# ModelDeployments: kopf keeps its finalizer and progress annotations on them.
- apiGroups: [kubechat.dev]
  resources: [modeldeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [kubechat.dev]
  resources: [modeldeployments/status]
  verbs: [get, patch]
# Worker pods' ownerReference to their ModelDeployment sets blockOwnerDeletion; where the
# OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift), creating such a pod
# needs update on the owner's finalizers.
- apiGroups: [kubechat.dev]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# Worker pods: created and deleted one by one (no delete-collection, no update).
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
# Heartbeat leases: read for readiness, removed with their deployment.
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, watch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
