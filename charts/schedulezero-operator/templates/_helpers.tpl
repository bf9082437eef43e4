{{- define "sz.name" -}}schedulezero-operator{{- end -}}
{{- define "sz.fullname" -}}{{ .Release.Name }}-schedulezero-operator{{- end -}}
{{- define "sz.labels" -}}
app.kubernetes.io/name: {{ include "sz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "sz.selector" -}}
app.kubernetes.io/name: {{ include "sz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- define "sz.serviceAccount" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "sz.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}
