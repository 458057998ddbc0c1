package org.hearth.demo

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.items
import androidx.compose.material3.AlertDialog
import androidx.compose.material3.Button
import androidx.compose.material3.ButtonDefaults
import androidx.compose.material3.Checkbox
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.Switch
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.saveable.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import org.hearth.LedgerEntry
import org.hearth.demo.model.DemoModel
import java.text.DateFormat
import java.util.Date

/** Every control Hearth offers the user, the privacy ledger, export and delete. */
@Composable
fun PrivacyScreen(
    state: UiState,
    onPersonalization: (Boolean) -> Unit,
    onPauseHistory: (Boolean) -> Unit,
    onFederatedOptIn: (Boolean) -> Unit,
    onBlock: (String, Boolean) -> Unit,
    onForget: (String) -> Unit,
    onExport: () -> Unit,
    onDeleteAll: () -> Unit,
) {
    val p = state.privacy
    if (p == null) {
        Column(Modifier.padding(16.dp)) {
            state.error?.let { Text(it, color = MaterialTheme.colorScheme.error) } ?: LinearProgressIndicator()
        }
        return
    }
    var confirmDelete by rememberSaveable { mutableStateOf(false) }
    val s = p.settings
    LazyColumn(Modifier.fillMaxWidth().padding(horizontal = 16.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
        item { Section("Your controls") }
        item {
            SwitchRow("Personalized recommendations", "Rank the home row from your viewing on this device", s.personalizationEnabled, onPersonalization)
        }
        item { SwitchRow("Pause viewing history", "Nothing you watch is recorded while paused", s.historyPaused, onPauseHistory) }
        item {
            SwitchRow(
                "Help improve recommendations",
                "Federated learning: while charging on Wi-Fi, only a clipped model update leaves the device",
                s.federatedOptIn,
                onFederatedOptIn,
            )
        }

        item { Section("Never show me") }
        items(p.categories, key = { "category-$it" }) { category ->
            Row(verticalAlignment = Alignment.CenterVertically) {
                Checkbox(checked = category in s.blockedCategories, onCheckedChange = { onBlock(category, it) })
                Text(category)
            }
        }

        item { Section("Privacy ledger") }
        item {
            val ledger = p.ledger
            Text("Updates sent from this device: ${ledger.entries.size}")
            Text("Privacy budget spent: ε %.2f of %.2f (δ = %.0e)".format(ledger.epsilonSpent, ledger.epsilonBudget, ledger.delta))
            LinearProgressIndicator(
                progress = { (ledger.epsilonSpent / ledger.epsilonBudget).toFloat().coerceIn(0f, 1f) },
                modifier = Modifier.fillMaxWidth().padding(vertical = 4.dp),
            )
            Text("Next round: ${p.nextRoundText}", style = MaterialTheme.typography.bodySmall)
        }
        items(p.ledger.entries, key = { "upload-${it.runId}-${it.round}-${it.atMs}" }) { LedgerRow(it) }

        if (p.experiments.isNotEmpty()) item { Section("Experiments on this device") }
        items(p.experiments, key = { "experiment-${it.experimentId}" }) { x ->
            Text("${x.experimentId}: your arm is \"${x.arm}\", drawn on this device")
            Text(
                "${x.exposures} rows and ${x.outcomes} plays logged here, sealed; nothing sent" +
                    if (x.logging) "" else " (not logging: history paused or personalization off)",
                style = MaterialTheme.typography.bodySmall,
            )
        }

        item { Section("Your history (${p.eventsHeld} events)") }
        items(p.watched, key = { "watched-${it.itemId}" }) { w ->
            Row(verticalAlignment = Alignment.CenterVertically) {
                Text(w.title, Modifier.weight(1f))
                TextButton(onClick = { onForget(w.itemId) }) { Text("Forget") }
            }
        }

        item {
            HorizontalDivider(Modifier.padding(vertical = 8.dp))
            Row(horizontalArrangement = Arrangement.spacedBy(12.dp)) {
                Button(onClick = onExport) { Text("Export my data") }
                OutlinedButton(
                    onClick = { confirmDelete = true },
                    colors = ButtonDefaults.outlinedButtonColors(contentColor = MaterialTheme.colorScheme.error),
                ) { Text("Delete everything") }
            }
        }
    }
    if (confirmDelete) {
        AlertDialog(
            onDismissRequest = { confirmDelete = false },
            title = { Text("Delete everything?") },
            text = { Text("Your viewing history, profile, settings and privacy ledger are erased from this device. This cannot be undone.") },
            confirmButton = {
                TextButton(onClick = {
                    confirmDelete = false
                    onDeleteAll()
                }) { Text("Delete", color = MaterialTheme.colorScheme.error) }
            },
            dismissButton = { TextButton(onClick = { confirmDelete = false }) { Text("Cancel") } },
        )
    }
}

@Composable
private fun Section(title: String) {
    Text(title, style = MaterialTheme.typography.titleMedium, modifier = Modifier.padding(top = 16.dp, bottom = 4.dp))
}

@Composable
private fun SwitchRow(title: String, detail: String, checked: Boolean, onChange: (Boolean) -> Unit) {
    Row(verticalAlignment = Alignment.CenterVertically) {
        Column(Modifier.weight(1f)) {
            Text(title)
            Text(detail, style = MaterialTheme.typography.bodySmall, color = MaterialTheme.colorScheme.onSurfaceVariant)
        }
        Switch(checked = checked, onCheckedChange = onChange)
    }
}

@Composable
private fun LedgerRow(e: LedgerEntry) {
    val whenSent = DateFormat.getDateTimeInstance(DateFormat.MEDIUM, DateFormat.SHORT).format(Date(e.atMs))
    Text(DemoModel.uploadText(e, whenSent), style = MaterialTheme.typography.bodySmall)
}
