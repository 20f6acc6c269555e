{{- define "rtvi.name" -}}
{{- printf "%s-%s" .root.Release.Name .service | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rtvi.labels" -}}
app.kubernetes.io/name: rtvi
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service }}
{{- end -}}

{{- define "rtvi.secretName" -}}
{{- default (printf "%s-rtvi" .Release.Name) .Values.existingSecret -}}
{{- end -}}
