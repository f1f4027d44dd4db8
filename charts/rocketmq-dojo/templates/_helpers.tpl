{{/* Names, labels and the image reference shared by the templates. */}}

{{- define "dojo.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's objects: "<fullname>-operator". */}}
{{- define "dojo.operator" -}}
{{- printf "%s-operator" (include "dojo.fullname" .) -}}
{{- end -}}

{{- define "dojo.serviceAccount" -}}
{{- default (include "dojo.operator" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "dojo.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "dojo.labels" -}}
{{ include "dojo.selectorLabels" . }}
app.kubernetes.io/part-of: rocketmq-dojo
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "dojo.image" -}}
{{- $img := .Values.operator.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) -}}
{{- end -}}
{{- end -}}
