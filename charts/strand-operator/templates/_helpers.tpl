{{- define "strand-operator.name" -}}strand-operator{{- end -}}
{{- define "strand-operator.fullname" -}}{{ .Release.Name }}-strand-operator{{- end -}}
{{- define "strand-operator.labels" -}}
app.kubernetes.io/name: strand-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "strand-operator.selector" -}}
app.kubernetes.io/name: strand-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
