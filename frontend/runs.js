// Placeholder runs list: reads GET /api/v1/runs and refreshes every few seconds.
const table = document.getElementById("runs");
const statusLine = document.getElementById("runs-status");

function row(run) {
  const tr = document.createElement("tr");
  const cells = [run.id, run.name || "—", run.status, null, new Date(run.created_at).toLocaleString()];
  for (const value of cells) {
    const td = document.createElement("td");
    if (value === null) {
      const bar = document.createElement("progress");
      bar.max = run.steps;
      bar.value = run.step;
      bar.title = `${run.step}/${run.steps}`;
      td.append(bar);
    } else {
      td.textContent = String(value);
    }
    tr.append(td);
  }
  return tr;
}

async function refresh() {
  try {
    const response = await fetch("/api/v1/runs?limit=50");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const { data, count } = await response.json();
    table.tBodies[0].replaceChildren(...data.map(row));
    table.hidden = data.length === 0;
    statusLine.textContent = count === 0 ? "No runs yet." : `${count} runs`;
  } catch (error) {
    statusLine.textContent = `Could not load runs: ${error.message}`;
  }
}

refresh();
setInterval(refresh, 3000);
