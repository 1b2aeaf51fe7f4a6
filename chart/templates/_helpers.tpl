{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "datastorage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; trimmed to 52 so "-postgresql-hl" style suffixes fit in 63. */}}
{{- define "datastorage.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "datastorage.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "datastorage.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "datastorage.fullname" .) }}
{{- end }}

{{- define "datastorage.redis.fullname" -}}
{{- printf "%s-redis" (include "datastorage.fullname" .) }}
{{- end }}

{{- define "datastorage.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "datastorage.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: call with (dict "ctx" $ "component" "server") ------------------------------ */}}

{{- define "datastorage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "datastorage.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "datastorage.labels" -}}
helm.sh/chart: {{ include "datastorage.chart" .ctx }}
{{ include "datastorage.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: kubernaut
{{- end }}

{{/* Images ---------------------------------------------------------------------------- */}}

{{- define "datastorage.image" -}}
{{- printf "%s:%v" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Feature switches (return "true" or "") -------------------------------------------- */}}

{{- define "datastorage.redis.bundled" -}}
{{- if and (eq .Values.dlq.backend "redis") .Values.redis.enabled }}true{{- end }}
{{- end }}

{{- define "datastorage.postgresql.secretName" -}}
{{- default (include "datastorage.postgresql.fullname" .) .Values.postgresql.auth.existingSecret }}
{{- end }}

{{- define "datastorage.redis.secretName" -}}
{{- default (include "datastorage.redis.fullname" .) .Values.redis.auth.existingSecret }}
{{- end }}

{{/* The chart-managed Secret holds URLs given in values (external database / Redis). */}}
{{- define "datastorage.secret.databaseUrl" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret) }}true{{- end }}
{{- end }}

{{- define "datastorage.secret.dlqUrl" -}}
{{- if and (eq .Values.dlq.backend "redis") (not .Values.redis.enabled) (not .Values.externalRedis.existingSecret) }}true{{- end }}
{{- end }}

{{- define "datastorage.operatorNamespaces" -}}
{{- if .Values.operator.namespaces }}
{{- join "," (uniq .Values.operator.namespaces) }}
{{- else }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "datastorage.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.shutdownDelay | int) (ceil .Values.shutdownTimeout | int) 5 }}
{{- end }}

{{- define "datastorage.dlqFilePath" -}}/var/lib/datastorage/dlq{{- end }}

{{- define "datastorage.postgresql.passwordDir" -}}/etc/datastorage/postgresql{{- end }}

{{/* Combinations the schema cannot express, each with a message that says what to set. */}}
{{- define "datastorage.validate" -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.url) (not .Values.externalDatabase.existingSecret) }}
{{- fail "postgresql.enabled=false needs externalDatabase.url or externalDatabase.existingSecret" }}
{{- end }}
{{- if and (eq .Values.dlq.backend "redis") (not .Values.redis.enabled) (not .Values.externalRedis.url) (not .Values.externalRedis.existingSecret) }}
{{- fail "dlq.backend=redis with redis.enabled=false needs externalRedis.url or externalRedis.existingSecret (or set dlq.backend=file)" }}
{{- end }}
{{- if and (eq .Values.dlq.backend "file") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "dlq.backend=file keeps the spool on one volume owned by one pod: set replicaCount=1 and autoscaling.enabled=false, or use dlq.backend=redis" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if gt (int .Values.config.dbPool.min) (int .Values.config.dbPool.max) }}
{{- fail "config.dbPool.min must not exceed config.dbPool.max" }}
{{- end }}
{{- if and (ne .Values.auth.mode "kubernetes") (gt (float64 .Values.auth.rateLimit.eventsPerSecond) 0.0) }}
{{- fail "auth.rateLimit is per authenticated caller: it needs auth.mode=kubernetes" }}
{{- end }}
{{- end }}

{{/* Security contexts ----------------------------------------------------------------- */}}

{{/* Restricted pod security for a pod: call with (dict "uid" 10001 "gid" 10001 "fsGroup" 10001). */}}
{{- define "datastorage.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .gid }}
fsGroup: {{ .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "datastorage.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Environment ------------------------------------------------------------------------ */}}

{{/* DATASTORAGE_DATABASE_URL for an external database (the bundled one's is in the ConfigMap).
     Call with (dict "ctx" $ "secret" NAME): NAME is the chart Secret holding the URL. */}}
{{- define "datastorage.env.externalDatabase" -}}
{{- if not .ctx.Values.postgresql.enabled }}
- name: DATASTORAGE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .ctx.Values.externalDatabase.existingSecret }}
      name: {{ .ctx.Values.externalDatabase.existingSecret }}
      key: {{ .ctx.Values.externalDatabase.existingSecretKey }}
      {{- else }}
      name: {{ .secret }}
      key: database-url
      {{- end }}
{{- if and .ctx.Values.externalDatabase.existingSecret .ctx.Values.externalDatabase.existingSecretReadKey }}
- name: DATASTORAGE_DATABASE_READ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .ctx.Values.externalDatabase.existingSecret }}
      key: {{ .ctx.Values.externalDatabase.existingSecretReadKey }}
{{- else if and (not .ctx.Values.externalDatabase.existingSecret) .ctx.Values.externalDatabase.readUrl }}
- name: DATASTORAGE_DATABASE_READ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: database-read-url
{{- end }}
{{- end }}
{{- end }}

{{/* DATASTORAGE_DLQ_URL for Redis (the file spool's is in the ConfigMap). The bundled Redis
     URL embeds the password through Kubernetes' $(VAR) expansion of the preceding variable. */}}
{{- define "datastorage.env.redisDlq" -}}
{{- if include "datastorage.redis.bundled" . }}
{{- if .Values.redis.auth.enabled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "datastorage.redis.secretName" . }}
      key: {{ .Values.redis.auth.existingSecretKey }}
- name: DATASTORAGE_DLQ_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:6379/%d" (include "datastorage.redis.fullname" .) (int .Values.redis.database) | quote }}
{{- end }}
{{- else if eq .Values.dlq.backend "redis" }}
- name: DATASTORAGE_DLQ_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.externalRedis.existingSecret }}
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretKey }}
      {{- else }}
      name: {{ include "datastorage.fullname" . }}
      key: dlq-url
      {{- end }}
{{- end }}
{{- end }}

{{/* A password that survives upgrades: the live Secret's value, else the given one, else random.
     Call with (dict "ctx" $ "secret" NAME "key" KEY "given" VALUE). */}}
{{- define "datastorage.stablePassword" -}}
{{- $live := lookup "v1" "Secret" .ctx.Release.Namespace .secret }}
{{- if .given }}
{{- .given }}
{{- else if and $live (hasKey ($live.data | default dict) .key) }}
{{- index $live.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* Mounts shared by the server and operator containers (both read the same settings). */}}
{{- define "datastorage.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.postgresql.enabled }}
- name: postgresql-password
  mountPath: {{ include "datastorage.postgresql.passwordDir" . }}
  readOnly: true
{{- end }}
{{- if eq .Values.dlq.backend "file" }}
- name: dlq
  mountPath: {{ include "datastorage.dlqFilePath" . }}
{{- end }}
{{- end }}

{{/* checkov ----------------------------------------------------------------------------- */}}

{{/* Findings of checkov (run by `make chart-test`) that the chart keeps on purpose, as
     checkov.io/skipN annotations with the reason beside each. Call with a list of
     "CHECK_ID=reason" strings; renders nothing for an empty list. */}}
{{- define "datastorage.checkovSkips" -}}
{{- range $i, $skip := . }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end }}
{{- end }}

{{/* Reasons every workload of the chart shares; call with the root context. */}}
{{- define "datastorage.checkov.workload" -}}
- "CKV_K8S_11=No CPU limit by default: CPU requests are set, and a limit throttles the process in bursts even on an idle node; set resources.limits.cpu in values to add one"
- "CKV_K8S_15=pullPolicy comes from values (IfNotPresent by default): release tags are immutable, and Always makes every container restart depend on the registry"
- "CKV_K8S_43=The image reference comes from values: set the image tag to TAG@sha256:DIGEST to pin a digest"
{{- if not .Values.networkPolicy.enabled }}
- "CKV2_K8S_6=NetworkPolicies are opt-in (networkPolicy.enabled: true renders one for every pod of the release): clusters differ in CNI and in who must reach the API"
{{- end }}
{{- end }}

{{/* A container whose Secret-held settings arrive as environment variables. */}}
{{- define "datastorage.checkov.secretEnv" -}}
CKV_K8S_35=Secrets in the environment only where no file setting exists: the Redis password inside DATASTORAGE_DLQ_URL and an external DATASTORAGE_DATABASE_URL, and the S3 credentials of checkpoint publication (the log signing key and the bundled database password are mounted files)
{{- end }}

{{/* The bundled databases run as the official images' own users. */}}
{{- define "datastorage.checkov.imageUser" -}}
CKV_K8S_40=Runs as the official image's own user (runAsUser in values: 70 or 999); a UID of 10000 or more needs an image built for it
{{- end }}

{{/* The tamper-evident log ------------------------------------------------------------------ */}}

{{/* Where the signing key Secret is mounted (API container only). */}}
{{- define "datastorage.log.keyDir" -}}/etc/datastorage/log{{- end }}

{{/* S3 credentials of checkpoint publication, from the given Secret (API container only). */}}
{{- define "datastorage.env.logS3" -}}
{{- with .Values.log.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
- name: AWS_REGION
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_REGION
      optional: true
{{- end }}
{{- end }}
