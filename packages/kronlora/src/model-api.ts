/**
 * The model API's classes and types, the same in Node (index.ts) and in a page
 * (browser/index.ts): what each entry adds is how models are loaded.
 */
export { KronLoraError, type KronLoraErrorCode } from './errors.js';
export { Model } from './model.js';
export type {
  ActiveAdapter,
  AdapterConfig,
  Classification,
  Device,
  ExportFormat,
  Family,
  GenerateOptions,
  Generation,
  InferenceOptions,
  LoadModelOptions,
  ModuleInfo,
  Task,
  TrainableParameters,
} from './model.js';
export { TrainingRun } from './training.js';
export type {
  CausalLmRecord,
  ClassificationRecord,
  DataSource,
  EvalMetrics,
  MultipleChoiceRecord,
  TrainEvent,
  TrainOptions,
  TrainRecord,
  TrainResult,
  TrainTask,
} from './training.js';
