{{/* Names and labels ------------------------------------------------------------------------ */}}

{{- define "leadercron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leadercron.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "leadercron.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "leadercron.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leadercron.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "leadercron.labels" -}}
helm.sh/chart: {{ include "leadercron.chart" . }}
{{ include "leadercron.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: scheduler
{{- end }}

{{- define "leadercron.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "leadercron.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "leadercron.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The election backend ---------------------------------------------------------------------- */}}

{{/* The backend URL's scheme, lower case ("" when there is none). */}}
{{- define "leadercron.scheme" -}}
{{- $backend := .Values.config.election.backend | default "" | trim }}
{{- if contains "://" $backend }}
{{- (splitList "://" $backend | first) | lower }}
{{- end }}
{{- end }}

{{/* "true" when the kubernetes:// backend is selected. */}}
{{- define "leadercron.isKubernetes" -}}
{{- if has (include "leadercron.scheme" .) (list "kubernetes" "k8s") }}true{{ end }}
{{- end }}

{{/* Namespace of the kubernetes:// backend's Leases: the URL's, else the release's (the pod's own). */}}
{{- define "leadercron.leaseNamespace" -}}
{{- $backend := .Values.config.election.backend | default "" | trim }}
{{- $authority := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://" $backend "" | splitList "/" | first | splitList "?" | first }}
{{- default .Release.Namespace $authority }}
{{- end }}

{{/* The variable and the URL option through which each backend takes its password. */}}
{{- define "leadercron.credentialEnv" -}}
{{- $scheme := include "leadercron.scheme" . }}
{{- if has $scheme (list "redis" "rediss") }}LEADERCRON_REDIS_PASSWORD
{{- else if has $scheme (list "etcd" "etcds") }}LEADERCRON_ETCD_PASSWORD
{{- else if has $scheme (list "zookeeper" "zk") }}LEADERCRON_ZOOKEEPER_PASSWORD
{{- else if has $scheme (list "consul" "consuls") }}LEADERCRON_CONSUL_TOKEN
{{- end }}
{{- end }}

{{- define "leadercron.credentialOption" -}}
{{- $scheme := include "leadercron.scheme" . }}
{{- if has $scheme (list "consul" "consuls") }}token_file
{{- else if has $scheme (list "redis" "rediss" "etcd" "etcds" "zookeeper" "zk") }}password_file
{{- end }}
{{- end }}

{{- define "leadercron.secretDir" -}}/var/run/secrets/leadercron/backend{{- end }}
{{- define "leadercron.tlsDir" -}}/var/run/secrets/leadercron/tls{{- end }}

{{/* The backend URL as the config file gets it: with password_file= (token_file=) in file mode. */}}
{{- define "leadercron.backendURL" -}}
{{- $backend := .Values.config.election.backend | default "" | trim }}
{{- $auth := .Values.backendAuth }}
{{- if and $auth.existingSecret (eq $auth.mode "file") }}
{{- $option := include "leadercron.credentialOption" . }}
{{- if contains (printf "%s=" $option) $backend }}
{{- $backend }}
{{- else }}
{{- printf "%s%s%s=%s/%s" $backend (ternary "&" "?" (contains "?" $backend)) $option (include "leadercron.secretDir" .) $auth.key }}
{{- end }}
{{- else }}
{{- $backend }}
{{- end }}
{{- end }}

{{/* Durations ----------------------------------------------------------------------------------- */}}

{{/* A leadercron duration (500ms, 10s, 1m, 2h, or a number of seconds) in seconds. */}}
{{- define "leadercron.durationSeconds" -}}
{{- $value := . }}
{{- if or (kindIs "float64" $value) (kindIs "int" $value) (kindIs "int64" $value) }}
{{- $value }}
{{- else }}
{{- $text := toString $value | trim }}
{{- if not (regexMatch "^([0-9]+(\\.[0-9]+)?|\\.[0-9]+) *(ms|s|m|h)?$" $text) }}
{{- fail (printf "%q is not a duration (500ms, 10s, 1m, 2h, or a number of seconds)" $text) }}
{{- end }}
{{- $number := regexFind "^([0-9]+(\\.[0-9]+)?|\\.[0-9]+)" $text }}
{{- $unit := trimPrefix $number $text | trim }}
{{- $factor := get (dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "" 1.0) $unit }}
{{- mulf (float64 $number) $factor }}
{{- end }}
{{- end }}

{{- define "leadercron.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- $grace := include "leadercron.durationSeconds" .Values.config.scheduler.grace_period | float64 }}
{{- add (ceil $grace | int) (int .Values.terminationGracePeriodMarginSeconds) }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds | int }}
{{- end }}
{{- end }}

{{/* Checks the schema cannot express; fails the render with one clear message. */}}
{{- define "leadercron.validate" -}}
{{- $backend := .Values.config.election.backend | default "" | trim }}
{{- $scheme := include "leadercron.scheme" . }}
{{- if not $backend }}
{{- fail "config.election.backend is required: the URL of a backend that every replica reaches (etcd://, redis://, zookeeper://, consul://, kubernetes://)" }}
{{- end }}
{{- if not $scheme }}
{{- fail (printf "config.election.backend %q is not a URL (expected e.g. etcd://etcd:2379)" $backend) }}
{{- end }}
{{- if and (has $scheme (list "file" "memory")) (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "config.election.backend %s:// only coordinates processes in one pod: with replicaCount %d every pod would lead on its own; use a shared backend (etcd://, redis://, zookeeper://, consul://, kubernetes://) or replicaCount 1" $scheme (int .Values.replicaCount)) }}
{{- end }}
{{- $authority := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://" $backend "" | splitList "/" | first }}
{{- if or (regexMatch "^[^@]*:[^@]*@" $authority) (regexMatch "[?&](password|token)=" $backend) }}
{{- fail "config.election.backend must not contain a password or token (the ConfigMap would hold it): put it in a Secret and set backendAuth.existingSecret" }}
{{- end }}
{{- if include "leadercron.isKubernetes" . }}
{{- $election := default (include "leadercron.fullname" .) .Values.config.election.name }}
{{- if or (gt (len $election) 253) (not (regexMatch "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$" $election)) }}
{{- fail (printf "config.election.name %q: with the kubernetes:// backend the election name is the Lease's name, a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')" $election) }}
{{- end }}
{{- end }}
{{- $auth := .Values.backendAuth }}
{{- if $auth.existingSecret }}
{{- if and (eq $auth.mode "env") (not $auth.envName) (not (include "leadercron.credentialEnv" .)) }}
{{- fail (printf "backendAuth: the %s:// backend has no password variable; set backendAuth.envName" $scheme) }}
{{- end }}
{{- if and (eq $auth.mode "file") (not (include "leadercron.credentialOption" .)) }}
{{- fail (printf "backendAuth.mode file: the %s:// backend takes no password_file option; use mode env with backendAuth.envName" $scheme) }}
{{- end }}
{{- end }}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and $pdb.enabled (not (kindIs "invalid" $pdb.maxUnavailable)) (not (kindIs "invalid" $pdb.minAvailable)) }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable, not both" }}
{{- end }}
{{- end }}

{{/* The leadercron config file. */}}
{{- define "leadercron.config" -}}
{{- $c := .Values.config }}
{{- $election := dict
      "name" (default (include "leadercron.fullname" .) $c.election.name)
      "backend" (include "leadercron.backendURL" .)
      "ttl" $c.election.ttl
      "renew_deadline" $c.election.renew_deadline
      "retry_period" $c.election.retry_period }}
{{- $http := dict "listen" (printf "%s:%d" .Values.http.host (int .Values.http.port)) }}
{{- $doc := dict
      "mode" (default "leader" $c.mode)
      "election" $election
      "scheduler" $c.scheduler
      "http" $http
      "log" $c.log
      "jobs" $c.jobs }}
{{- toYaml $doc }}
{{- end }}
