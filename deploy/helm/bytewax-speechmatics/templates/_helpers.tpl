{{/* Names and labels shared by the templates. */}}
{{- define "bwsm.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bwsm.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "bwsm.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: flow
{{- end -}}

{{- define "bwsm.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "bwsm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ .Values.serviceAccount.name | default (include "bwsm.fullname" .) }}
{{- else -}}
{{ .Values.serviceAccount.name | default "default" }}
{{- end -}}
{{- end -}}

{{- define "bwsm.secretName" -}}
{{ .Values.speechmatics.existingSecret | default (printf "%s-api-key" (include "bwsm.fullname" .)) }}
{{- end -}}

{{- define "bwsm.claimName" -}}
{{ .Values.recovery.persistence.existingClaim | default (printf "%s-recovery" (include "bwsm.fullname" .)) }}
{{- end -}}

{{/* The hostfile: one "pod.service:port" line per process, in process order. */}}
{{- define "bwsm.hostfile" -}}
{{- $name := include "bwsm.fullname" . -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.configuration.processesCount) -}}
{{- $hosts = append $hosts (printf "%s-%d.%s.%s.svc:%d" $name $i $name $.Release.Namespace (int $.Values.configuration.clusterPort)) -}}
{{- end -}}
{{ join "\n" $hosts }}
{{- end -}}
