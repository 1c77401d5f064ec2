// Policies for reliability tests that only need a team's http socket to exist.

/** Team `team` with http_request on an origin nothing listens on; `extra` goes at the top level. */
export const socketOnlyPolicy = (team: string, extra = '') => `team: ${team}
${extra}servers:
  http:
    hosts:
      - origin: http://127.0.0.1:9
        allowPrivateAddress: true
    tools:
      http_request: {}
`;
