// The page's one piece of shared state: what is shown and with which filters. Only the views change it.
export const view = {
  filter: { states: new Set(), tag: "", q: "" },
  jobs: [],
  cursor: null,
  selected: new Set(), // ids ticked in the list, for the bulk actions
  counts: null,
  history: [],
  jobId: null,
  job: null,
  logAbort: null,
};
