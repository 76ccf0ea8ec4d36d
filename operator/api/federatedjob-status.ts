import { Static } from '@sinclair/typebox';
import { dateTime, int, list, num, obj, oneOfStrings, optional, str } from './openapi';

/** MAX_SITES bounds spec.sites and status.sites alike. */
export const MAX_SITES = 128;

/** MAX_HISTORY is how many rounds status.history keeps (the most recent ones). */
export const MAX_HISTORY = 100;

/** PHASES are the values of status.phase. */
export const PHASES = ['Pending', 'Running', 'Suspended', 'Succeeded', 'Failed'] as const;
export type Phase = (typeof PHASES)[number];

/** CONDITION_TYPES are the condition types the controller writes. */
export const CONDITION_TYPES = ['Created', 'Running', 'Suspended', 'Succeeded', 'Failed'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number];

/** SITE_PHASES are the values of status.sites[].phase. */
export const SITE_PHASES = ['Pending', 'Running', 'Training', 'Failed', 'Finished'] as const;

const ConditionSchema = obj(
  {
    type: str({
      description: `Kind of condition: ${CONDITION_TYPES.join(', ')}.`,
      maxLength: 316,
      pattern:
        '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$',
    }),
    status: oneOfStrings(['True', 'False', 'Unknown'] as const, {
      description: 'Whether the condition holds: True, False or Unknown.',
    }),
    observedGeneration: optional(
      int({
        description: 'The metadata.generation of the spec this condition was computed from.',
        minimum: 0,
      }),
    ),
    lastTransitionTime: dateTime({ description: 'When status last changed.' }),
    reason: str({
      description: 'One CamelCase word for the cause, for tools to match on.',
      minLength: 1,
      maxLength: 1024,
      pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$',
    }),
    message: str({ description: 'What happened, for people.', maxLength: 32768 }),
  },
  { description: 'One condition of the job, in the standard Kubernetes form.' },
);

const RoundMetricsSchema = obj(
  {
    round: int({ description: 'The round these metrics are from.', minimum: 0 }),
    accuracy: optional(num({ description: 'Accuracy of the global model on the held-out data.' })),
    loss: optional(num({ description: 'Loss of the global model on the held-out data.' })),
    trainLoss: optional(
      num({ description: 'Mean training loss the participants reported, weighted by examples.' }),
    ),
    participants: optional(int({ description: 'Sites whose update was aggregated.', minimum: 0 })),
    examples: optional(int({ description: 'Training examples behind the round.', minimum: 0 })),
    durationSeconds: optional(num({ description: 'How long the round took.', minimum: 0 })),
    completionTime: optional(dateTime({ description: 'When the round closed.' })),
  },
  { description: 'Results of one round.' },
);

const SiteStatusSchema = obj(
  {
    name: str({ description: 'The site, as in spec.sites.', maxLength: 63 }),
    pod: optional(str({ description: 'The trainer pod now serving the site.', maxLength: 253 })),
    phase: oneOfStrings(SITE_PHASES, {
      description:
        'Pending (no pod running yet), Running (joined, idle), Training (in the current ' +
        'round), Failed (backoffLimit used up), Finished.',
    }),
    restarts: int({
      description: 'Trainer pods replaced for this site so far (counted against backoffLimit).',
      minimum: 0,
      default: 0,
    }),
    lastRound: optional(
      int({ description: "The last round this site's update was aggregated in.", minimum: 0 }),
    ),
    examples: optional(
      int({ description: "Training examples of the site's last update.", minimum: 0 }),
    ),
    message: optional(str({ description: 'Why the site is not healthy, when it is not.' })),
  },
  { description: 'State of one site.' },
);

/** FederatedJobStatusSchema is the schema of `status`, written by the controller only. */
export const FederatedJobStatusSchema = obj(
  {
    phase: optional(
      oneOfStrings(PHASES, {
        description: `Where the job is: ${PHASES.join(', ')}.`,
      }),
    ),
    observedGeneration: optional(
      int({ description: 'The metadata.generation the controller last acted on.', minimum: 0 }),
    ),
    conditions: optional(
      list(ConditionSchema, {
        description: 'Conditions of the job: Created, Running, Suspended, Succeeded, Failed.',
        maxItems: 16,
        listType: 'map',
        mapKeys: ['type'],
      }),
    ),
    round: optional(
      int({ description: 'The round in progress (or the last one, once finished).', minimum: 0 }),
    ),
    roundProgress: optional(
      str({ description: 'Completed rounds of spec.rounds, as "3/10".', maxLength: 32 }),
    ),
    roundRetries: optional(
      int({ description: 'Retries of the current round so far.', minimum: 0 }),
    ),
    sitesReady: optional(
      str({ description: 'Sites with a running trainer, of all sites, as "2/3".', maxLength: 32 }),
    ),
    sites: optional(
      list(SiteStatusSchema, {
        description: 'State of every site.',
        maxItems: MAX_SITES,
        listType: 'map',
        mapKeys: ['name'],
      }),
    ),
    metrics: optional(RoundMetricsSchema),
    history: optional(
      list(RoundMetricsSchema, {
        description: `Results of the most recent rounds, oldest first (at most ${MAX_HISTORY}).`,
        maxItems: MAX_HISTORY,
      }),
    ),
    startTime: optional(dateTime({ description: 'When the first round started.' })),
    completionTime: optional(dateTime({ description: 'When the job succeeded or failed.' })),
    model: optional(
      obj(
        {
          path: str({
            description: 'Path of model.onnx inside spec.output (or spec.outputVolume).',
            maxLength: 4096,
          }),
          round: int({ description: 'The round the model is from.', minimum: 0 }),
        },
        { description: 'Where the final model is, once written.' },
      ),
    ),
  },
  { description: 'What the controller observed; written by the controller only.' },
);

/** JobCondition is one entry of `status.conditions`. */
export type JobCondition = Static<typeof ConditionSchema>;
