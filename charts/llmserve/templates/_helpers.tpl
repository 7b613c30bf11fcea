{{/* <release>-llmserve, or just <release> when the release name already says llmserve (the README's
`helm install llmserve ...` gives llmserve-operator, not llmserve-llmserve-operator). */}}
{{- define "llmserve.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "llmserve" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name "llmserve" | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmserve.leaseName" -}}
{{- include "llmserve.operatorName" . -}}
{{- end -}}

{{- define "llmserve.operatorName" -}}
{{- printf "%s-operator" (include "llmserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmserve.serviceAccountName" -}}
{{- default (include "llmserve.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "llmserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "llmserve.labels" -}}
app.kubernetes.io/name: llmserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "llmserve.operatorSelector" -}}
app.kubernetes.io/name: llmserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "llmserve.gatewayName" -}}
{{- printf "%s-gateway" (include "llmserve.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "llmserve.gatewaySelector" -}}
app.kubernetes.io/name: llmserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "llmserve.engineKeySecret" -}}
{{- default (printf "%s-engine-key-master" (include "llmserve.fullname" .)) .Values.engineKey.masterSecretName -}}
{{- end -}}

{{/* NetworkPolicyPeers admitted to every engine: this release's gateway and operator pods, plus extras. */}}
{{- define "llmserve.engineIngressFrom" -}}
{{- $own := dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .Release.Namespace)) "podSelector" (dict "matchLabels" (dict "app.kubernetes.io/name" "llmserve" "app.kubernetes.io/instance" .Release.Name) "matchExpressions" (list (dict "key" "app.kubernetes.io/component" "operator" "In" "values" (list "gateway" "operator")))) -}}
{{- concat (list $own) .Values.networkPolicy.extraIngressFrom | toJson -}}
{{- end -}}
