// Runs IAM simulations with @cloud-copilot/iam-simulate (AGPL-3.0-or-later: a test tool of the
// local environment, installed into .tools/npm by `make tools`, never shipped with stackdrop).
//
//   node infra/local/iam_simulate.mjs NPM_PREFIX < jobs.json > results.json
//
// jobs.json: [{"id", "identityPolicies": [{"name", "policy"}], "permissionBoundaryPolicies":
// [{"name", "policy"}] (optional), "request": {"principal", "action", "resource":
// {"resource", "accountId"}, "contextVariables"}}]. One answer per job, in order: {"id",
// "result" (Allowed, ImplicitlyDenied, ExplicitlyDenied, or Error), "errors", "ignored"
// (context keys that do not apply to the action), "allowedBy" / "deniedBy" ([policy, Sid] of
// the identity statements that decided), "boundaryDeniedBy", "nearMisses" (identity Allow
// statements whose action and resource matched but whose condition did not, with the
// conditions that failed)}. iam_check.py writes the jobs and reads the answers.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const prefix = process.argv[2];
if (!prefix) {
  console.error('usage: node iam_simulate.mjs NPM_PREFIX < jobs.json');
  process.exit(2);
}
const entry = join(prefix, 'node_modules', '@cloud-copilot', 'iam-simulate', 'dist', 'esm', 'index.js');
const { runSimulation } = await import(pathToFileURL(entry).href);

const sid = (s) => [s.policyId, JSON.parse(JSON.stringify(s.statement ?? {})).Sid ?? s.explain?.identifier ?? null];
const failing = (explain) =>
  (explain?.conditions ?? []).filter((c) => !c.matches).map((c) => ({
    operator: c.operator,
    key: c.conditionKeyValue,
    values: [].concat(c.values ?? []).map((v) => v?.value ?? v),
    unmatchedValues: c.unmatchedValues ?? [],
    missing: c.failedBecauseMissing ?? undefined,
  }));

const jobs = JSON.parse(readFileSync(0, 'utf8'));
const out = [];
for (const job of jobs) {
  let r;
  try {
    r = await runSimulation({
      identityPolicies: job.identityPolicies,
      permissionBoundaryPolicies: job.permissionBoundaryPolicies ?? [],
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      resourcePolicy: undefined,
      request: job.request,
    }, {});
  } catch (e) {
    out.push({ id: job.id, result: 'Error', errors: [String(e)] });
    continue;
  }
  if (r.resultType === 'error' || r.errors) {
    out.push({ id: job.id, result: 'Error', errors: [r.errors ?? r] });
    continue;
  }
  const a = r.result?.analysis ?? {};
  const identity = a.identityAnalysis ?? {};
  const boundary = a.permissionBoundaryAnalysis ?? {};
  out.push({
    id: job.id,
    result: r.overallResult,
    ignored: r.result?.ignoredContextKeys ?? [],
    allowedBy: (identity.allowStatements ?? []).map(sid),
    deniedBy: (identity.denyStatements ?? []).map(sid),
    boundaryResult: boundary.result ?? null,
    boundaryDeniedBy: (boundary.denyStatements ?? []).map(sid),
    nearMisses: (identity.unmatchedStatements ?? [])
      .filter((s) => s.explain?.effect === 'Allow' && s.actionMatch && s.resourceMatch)
      .map((s) => ({ statement: sid(s), failing: failing(s.explain) })),
  });
}
process.stdout.write(JSON.stringify(out));
